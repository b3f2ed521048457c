"""Async file I/O, the part of uringloop beyond asyncio (no other loop
offers it): on the ring under a uringloop ``Loop``, in the default executor
under any other loop.  The public names (``uringloop.open``,
``AsyncFile``, ``AsyncTextFile``, ``stat``, ``remove``, ...) are exported
by the ``uringloop`` package; this package holds their implementation:

  ``_binary``  ``open()`` and the binary file, its read-ahead and writes
  ``_text``    text mode on top of a binary file
  ``_paths``   path operations and whole-file helpers
  ``_ops``     the ring and executor engines, ``FileOp``, ``CallGroup``
  ``_mode``    ``open()``'s arguments, checked as the built-in checks them
  ``_args``    the other arguments, converted as ``io`` and ``os`` do
"""
