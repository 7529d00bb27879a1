"""One module per ``tal`` verb; each defines a click command named ``command``."""
