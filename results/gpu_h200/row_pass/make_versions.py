"""Write versions/NAME.json: the line edits that turn the library's triton_cca.py into FILE.

    python results/gpu_h200/row_pass/make_versions.py NAME FILE
"""
import difflib
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
lib = (HERE.parents[2] / "vidccnet" / "ops" / "triton_cca.py").read_text()
if len(sys.argv) != 3 or not Path(sys.argv[2]).is_file():
    sys.exit("usage: python results/gpu_h200/row_pass/make_versions.py NAME KERNEL_FILE")
name, target = sys.argv[1], Path(sys.argv[2]).read_text()
a, b = lib.splitlines(keepends=True), target.splitlines(keepends=True)
edits = [[i1, i2, "".join(b[j1:j2])] for tag, i1, i2, j1, j2 in
         difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if tag != "equal"]
(HERE / "versions" / f"{name}.json").write_text(json.dumps(
    {"base_sha256": hashlib.sha256(lib.encode()).hexdigest(), "edits": edits}, indent=1))
print(name, len(edits), "edits")
