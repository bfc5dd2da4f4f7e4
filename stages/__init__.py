"""The reference pipeline's stages, each run as ``python -m stages.<name>``.

A stage run as a program pins its numeric environment here, before the stage
module (and so numpy, torch or onnxruntime) is imported: the libraries read
those settings when they load, and the pipeline's bytes must not depend on the
machine or on the caller's environment (see relgate.numeric_env). Importing a
stage's functions (as the tests do) pins nothing.
"""

import sys

if sys.orig_argv[1:2] == ["-m"] and sys.orig_argv[2:3] and sys.orig_argv[2].startswith("stages."):
    from relgate.numeric_env import pin_process

    pin_process()
