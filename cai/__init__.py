"""cai: Constitutional AI and RLAIF with constitutions as data."""

__version__ = "0.1.0"
