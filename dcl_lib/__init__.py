"""dcl_lib: the support library of the executable book on deep clustering."""
__version__ = "0.1.0"
