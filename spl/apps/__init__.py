"""The applications built on the library: the drivers behind the ``spl`` command (``refine``, ``eval``,
``train``, ``bench``, ``demo``) and what they share (``common``: atomic writes, locks, threads,
torch.distributed; ``scenes``: synthetic scenes), the DeepLab-v2 model of ``spl train`` (``models``),
the WSSS evaluation harness and its peers (``cam_eval``, ``peers``: PAR and DenseCRF). The library
(``spl.*``: ops, ``asam``, ``losses``, ``metrics``, ``formats``, ``reference``) never imports them."""
