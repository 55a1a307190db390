"""Print pyproject.toml's dependency names without their bounds, one a line.

`make test-latest BOUNDS=off` passes this list to uv as overrides, so the throwaway
environment takes the newest release of every dependency, next major versions included.
"""

import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
    print(re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", requirement).group(0))
