"""The command line's commands, one module each: NAME, HELP, ``add_arguments(parser)`` and ``run(args)``.

Each module imports only the standard library and torch-free constants at its top, and what its
command runs inside ``run``: every ``--help`` stays instant. ``attnpaper.__main__`` builds the parser.
"""
