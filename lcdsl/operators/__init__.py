"""The built-in C-step operators, one family a module, registered like any plugin."""
