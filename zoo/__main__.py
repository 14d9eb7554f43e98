import sys

from zoo.cli import main
from zoo.compile_cache import use_compilation_cache

use_compilation_cache()  # the command line's own process: programs compiled once per machine
sys.exit(main())
