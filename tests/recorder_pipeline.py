"""A real pipeline command for the tests: records what it was given, then behaves as told.

It appends one JSON line per run to $RECORD_DIR/runs.jsonl (argv, stdin, the SEESTAR_WATCH_*
variables and whether NOTIFY_SOCKET/WATCHDOG_* leaked through). $BEHAVIOUR chooses what it
does next: ok, fail, unusable (exit 65), fail-then-ok (fails while $RECORD_DIR/fail-count < 2),
hang, slow:<s>,
grandchild (leaves a child holding stdout open), flood (writes 50 MB to stdout),
group:<s> (a helper in its process group, then slow), escape (a double-forked, setsid
process left behind). $RESULT, when set, is written as it is to $SEESTAR_WATCH_RESULT;
$RESULT_AS=fifo, symlink or folder puts a FIFO, a link to $RESULT, or a folder there instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

record_dir = os.environ["RECORD_DIR"]
behaviour = os.environ.get("BEHAVIOUR", "ok")
stdin = sys.stdin.read()
record = {
    "argv": [os.fsencode(a).hex() for a in sys.argv[1:]],
    "stdin": stdin,
    "path": os.environ.get("SEESTAR_WATCH_PATH"),
    "source": os.environ.get("SEESTAR_WATCH_SOURCE"),
    "event": os.environ.get("SEESTAR_WATCH_EVENT"),
    "extra": os.environ.get("EXTRA_SETTING"),
    "config": os.environ.get("SEESTAR_WATCH_CONFIG"),
    "leaked": sorted(k for k in os.environ if k == "NOTIFY_SOCKET" or k.startswith("WATCHDOG_")),
    "result_path": os.environ.get("SEESTAR_WATCH_RESULT"),
    "pid": os.getpid(),
    "started": time.time(),
}
# one write of the whole line (O_APPEND): a reader never sees half of it from a buffer flush
line = (json.dumps(record) + "\n").encode()
runs = os.open(
    os.path.join(record_dir, "runs.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666
)
try:
    os.write(runs, line)
finally:
    os.close(runs)

result_path = os.environ.get("SEESTAR_WATCH_RESULT")
if result_path and "RESULT" in os.environ:
    if os.environ.get("RESULT_AS") in ("fifo", "symlink", "folder"):
        os.unlink(result_path)
        if os.environ["RESULT_AS"] == "fifo":
            os.mkfifo(result_path)
        elif os.environ["RESULT_AS"] == "folder":
            os.mkdir(result_path)
            with open(os.path.join(result_path, "inside"), "w") as inside:
                inside.write(os.environ["RESULT"])
        else:
            os.symlink(os.environ["RESULT"], result_path)
    else:
        with open(result_path, "w") as out:
            out.write(os.environ["RESULT"])

if behaviour == "fail":
    print("photometry failed: no stars", file=sys.stderr)
    sys.exit(3)
if behaviour == "unusable":  # EX_DATAERR: this frame can never be used
    print("reading the frame", flush=True)
    print("not a light frame: NAXIS = 3 (an on-board stack)", file=sys.stderr)
    sys.exit(65)
if behaviour == "fail-then-ok":
    counter = os.path.join(record_dir, "fail-count")
    failures = int(open(counter).read()) if os.path.exists(counter) else 0
    if failures < 2:
        open(counter, "w").write(str(failures + 1))
        sys.exit(4)
if behaviour == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.path.join(record_dir, "hang-child.pid"), "w").write(str(child.pid))
    time.sleep(600)
if behaviour.startswith("slow:"):
    time.sleep(float(behaviour.split(":")[1]))
    open(os.path.join(record_dir, "slow-finished"), "a").write("x\n")
if behaviour.startswith("group:"):  # a helper in its process group, then slow
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.path.join(record_dir, "group-helper.pid"), "w").write(str(helper.pid))
    time.sleep(float(behaviour.split(":")[1]))
if behaviour == "escape":  # double fork + setsid: a background solver left behind
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open(os.path.join(record_dir, "escaped.pid"), "w").write(str(os.getpid()))
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)"])
        os._exit(0)
    os.wait()
if behaviour == "grandchild":
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=sys.stdout)
if behaviour == "flood":
    chunk = b"x" * 1023 + b"\n"
    for _ in range(50 * 1024):
        sys.stdout.buffer.write(chunk)
print("measured ok")
