# Forked children under libpktslab: each child reads the parent's objects
# and allocates; the first exits normally (so it prints its heap report),
# the others with _exit. Then subprocess spawns. Used by userlib's preload
# test on the host and by the guest suite's pinned_programs (device mode).
# Arguments: the number of forks, then "threads" to keep a thread
# allocating while the parent forks.
import os, subprocess, sys, threading, json

forks = int(sys.argv[1])
threaded = "threads" in sys.argv[2:]
data = {str(i): list(range(i % 50)) for i in range(5000)}
stop = False


def churn():
    while not stop:
        [bytes(i) for i in range(200)]


t = threading.Thread(target=churn)
if threaded:
    t.start()
for k in range(forks):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        ok = sum(len(v) for v in data.values()) == 122500
        more = json.dumps({i: "x" * i for i in range(300)})
        code = 0 if ok and len(more) > 1000 else 3
        if k == 0:
            sys.exit(code)  # a normal exit: the child prints its report
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    print("child", k, os.waitstatus_to_exitcode(st))
stop = True
if threaded:
    t.join()
print(subprocess.run(["/usr/bin/sort", "-r"], input="a\nc\nb\n", capture_output=True, text=True).stdout)
print(subprocess.check_output([sys.executable, "-c", "print(sum(range(10**5)))"]).decode())
