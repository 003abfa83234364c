"""Model providers behind one narrow interface (see base.py)."""
