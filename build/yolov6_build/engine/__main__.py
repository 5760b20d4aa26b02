"""Entry point of the TensorRT image: ``python -m yolov6_build.engine <gpu repository>``."""

import sys

from .cli import main

sys.exit(main())
