# Forked children under libpktslab: each child reads the parent's objects
# and allocates; the first exits normally (so it prints its heap report),
# the others with _exit. Then subprocess spawns. Used by userlib's preload
# test on the host and by the guest suite's pinned_programs (device mode).
# Arguments: the number of forks, then "threads" to keep a thread
# allocating while the parent forks, and "crc" to keep a thread in
# zlib.crc32 (libpktcrc's device call, when preloaded) while the parent
# forks: each child's own crc32 calls must then finish, with the right
# values (a child that hangs is killed by its alarm and shows as -14).
# The forks stop at the first child that fails.
import os, signal, subprocess, sys, threading, json, zlib

forks = int(sys.argv[1])
threaded = "threads" in sys.argv[2:]
crc = "crc" in sys.argv[2:]
data = {str(i): list(range(i % 50)) for i in range(5000)}
stop = False


def churn():
    while not stop:
        [bytes(i) for i in range(200)]


def soft_crc32(buf):
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        table.append(c)
    c = 0xFFFFFFFF
    for b in buf:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# Over 5 KiB, so zlib.crc32 lets go of the GIL while it runs.
crc_cases = [bytes((i * 31 + n) & 0xFF for i in range(65536 + n)) for n in range(3)]
crc_cases.append(b"123456789")
crc_want = [soft_crc32(b) for b in crc_cases]
crc_wrong = []


def crc_ok():
    return all(zlib.crc32(b) == w for b, w in zip(crc_cases, crc_want))


def crc_loop():
    while not stop:
        if not crc_ok():
            crc_wrong.append(1)


threads = [threading.Thread(target=churn), threading.Thread(target=crc_loop)]
threads = [t for t, on in zip(threads, [threaded, crc]) if on]
for t in threads:
    t.start()
for k in range(forks):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        if crc:
            signal.alarm(30)
        ok = sum(len(v) for v in data.values()) == 122500
        more = json.dumps({i: "x" * i for i in range(300)})
        ok = ok and (not crc or all(crc_ok() for _ in range(3)))
        code = 0 if ok and len(more) > 1000 else 3
        if k == 0:
            sys.exit(code)  # a normal exit: the child prints its report
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    print("child", k, os.waitstatus_to_exitcode(st))
    if st != 0:
        break
stop = True
for t in threads:
    t.join()
if crc:
    print("crc32 in the parent's thread:", "wrong" if crc_wrong else "right")
print(subprocess.run(["/usr/bin/sort", "-r"], input="a\nc\nb\n", capture_output=True, text=True).stdout)
print(subprocess.check_output([sys.executable, "-c", "print(sum(range(10**5)))"]).decode())
