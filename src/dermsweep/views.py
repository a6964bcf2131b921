"""Test-time views: which symmetries of the image the shipped model looks at (keras_layers.DihedralView draws each
one). Plain Python, so the config's rules can name the view sets without loading Keras."""

# The dihedral group of the square: (quarter turns, then mirrored left-right?). A dermoscopic image has no "up", so
# every one of these is as plausible as the original.
IDENTITY = (0, False)
FLIPS = ((0, False), (0, True), (2, True), (2, False))  # identity, left-right, up-down, half turn: shape kept
DIHEDRAL = FLIPS + ((1, False), (1, True), (3, False), (3, True))  # + quarter turns: height and width swap
VIEWS = {"none": (IDENTITY,), "flips": FLIPS, "dihedral": DIHEDRAL}
VIEW_SETS = tuple(VIEWS)
