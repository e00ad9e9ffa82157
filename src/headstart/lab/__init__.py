"""The lecture's lab: its operations in NumPy (``ops``), parameter arithmetic (``summary``) and
pictures of what a CNN sees (``featuremaps``)."""
