"""Fetches one file out of a wheel from the Python package index (no install, no dependencies).

    python3 tools/fetch_wheel_member.py SPEC MEMBER DEST

SPEC is a pinned requirement ("onnxruntime==1.31.1"), MEMBER the path inside the wheel, DEST where
the file goes (written as DEST.partial, then renamed; executable bits kept). Used by build.rs
(ONNX Runtime's shared library) and the cluster tests (the nats-server binary).
"""

import glob
import os
import subprocess
import sys
import tempfile
import zipfile


def main() -> None:
    spec, member, dest = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "-d", wheels, spec],
            check=True,
        )
        (wheel,) = glob.glob(os.path.join(wheels, "*.whl"))
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(member)
            partial = dest + ".partial"
            with open(partial, "wb") as out:
                out.write(z.read(info))
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(partial, mode or 0o755)
    os.replace(partial, dest)


if __name__ == "__main__":
    main()
