import sys

from zoo.cli import main

# the command line's own process: XLA's programs compiled once per machine (zoo.compile_cache)
sys.exit(main(compile_cache=True))
