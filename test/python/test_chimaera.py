#!/usr/bin/env python3
"""End-to-end tests of the `chimaera` Python module.

The module starts its own runtime (chimaera_start_runtime from
$CHIMAERA_BIN_DIR) on a free port with its own shared-memory segments, and
always stops it and removes the segments, even when a test fails. CTest runs
it with PYTHONPATH pointing at the built module (python/CMakeLists.txt).
Plain unittest: `python3 test_chimaera.py -v`.
"""

import copy
import ctypes
import gc
import os
import pickle
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import chimaera

BIN_DIR = os.environ.get("CHIMAERA_BIN_DIR", "")
START_TIMEOUT_S = 30  # generous: ctest -j runs other runtimes meanwhile


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """True if something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def segment_paths(port):
    """/dev/shm paths of the runtime's three segments (PosixShmMmap::MakeName:
    /chimaera_<user>_<host:port>_<segment>, unsafe characters as '_')."""
    def sanitize(s):
        return re.sub(r"[^A-Za-z0-9_.-]", "_", s)
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return ["/dev/shm/chimaera_%s_%s_%s" % (sanitize(user),
                                            sanitize("127.0.0.1:%d" % port),
                                            seg)
            for seg in ("main", "client_data", "runtime_data")]


def _die_with_parent():
    """In the runtime child: SIGTERM it if this test process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Runtime:
    """A chimaera_start_runtime child with its own port, config and
    segments."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="chi_py_test_")
        self.port = free_port()
        self.conf = os.path.join(self.dir, "conf.yaml")
        self.log = os.path.join(self.dir, "runtime.log")
        with open(self.conf, "w") as f:
            f.write("network:\n  port: %d\n"
                    "shm:\n  main: 32m\n  client_data: 32m\n"
                    "  runtime_data: 16m\n"
                    "client:\n  task_timeout_ms: 20000\n" % self.port)
        self.env = dict(os.environ, CHI_SERVER_CONF=self.conf)
        self.env.pop("CHI_NODE_ID", None)
        self.env.pop("CHI_SERVER_ADDR", None)
        self.proc = None

    def log_text(self):
        """What the runtime printed so far."""
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def start(self):
        """Starts the runtime and waits until it answers; raises on
        failure."""
        exe = os.path.join(BIN_DIR, "chimaera_start_runtime")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([exe], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if "ready" in self.log_text() and listening(self.port):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("runtime exited at start:\n" +
                                   self.log_text())
            time.sleep(0.01)
        raise RuntimeError("runtime did not start in %d s:\n%s" %
                           (START_TIMEOUT_S, self.log_text()))

    def stop(self):
        """Stops the runtime (chimaera_stop_runtime, then SIGTERM/SIGKILL),
        removes its segments and files. Returns an error text or None."""
        error = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                r = subprocess.run(
                    [os.path.join(BIN_DIR, "chimaera_stop_runtime")],
                    env=self.env, capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    error = "chimaera_stop_runtime: " + r.stdout + r.stderr
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                error = "the runtime did not stop"
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            elif self.proc.returncode != 0 and error is None:
                error = "runtime exit status %d:\n%s" % (
                    self.proc.returncode, self.log_text())
        for path in segment_paths(self.port):
            try:
                os.unlink(path)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        return error


RUNTIME = None


def setUpModule():
    global RUNTIME
    if not os.path.isfile(os.path.join(BIN_DIR, "chimaera_start_runtime")):
        raise unittest.SkipTest("set CHIMAERA_BIN_DIR to the directory of "
                                "chimaera_start_runtime")
    RUNTIME = Runtime()
    try:
        RUNTIME.start()
        chimaera.connect(RUNTIME.conf)
    except BaseException:
        RUNTIME.stop()
        RUNTIME = None
        raise


def tearDownModule():
    global RUNTIME
    if RUNTIME is None:
        return
    chimaera.disconnect()
    error = RUNTIME.stop()
    RUNTIME = None
    if error:
        raise RuntimeError(error)


def compute_kernel(iters, seed):
    """The client-side twin of small_message::ComputeKernel."""
    mask = (1 << 64) - 1
    x = seed ^ 0x9E3779B97F4A7C15
    for i in range(iters):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        x = (x * 0x2545F4914F6CDD1D + i) & mask
    return x


class ConnectionTest(unittest.TestCase):

    def test_connect_is_idempotent(self):
        self.assertTrue(chimaera.is_connected())
        chimaera.connect()
        chimaera.connect(RUNTIME.conf)
        self.assertTrue(chimaera.is_connected())
        chimaera.Admin().noop()

    def test_disconnected_calls_raise_unavailable(self):
        admin = chimaera.Admin()
        pending = admin.async_echo(5)
        self.assertEqual(pending.result(), 5)
        chimaera.disconnect()
        try:
            chimaera.disconnect()  # idempotent
            self.assertFalse(chimaera.is_connected())
            with self.assertRaises(chimaera.Error) as cm:
                admin.noop()
            self.assertEqual(cm.exception.code, chimaera.StatusCode.Unavailable)
            # A resolved Future keeps its result after a disconnect.
            self.assertEqual(pending.result(), 5)
        finally:
            chimaera.connect()
        self.assertEqual(admin.echo(6), 6)

    def test_disconnect_does_not_wait_for_another_threads_long_wait(self):
        # Another thread waits up to an hour on a task of about 2 s,
        # and another sits in a synchronous call: disconnect() makes both
        # give up instead of waiting for them.
        sm = chimaera.SmallMessage.create("disconnect_waits")
        f = sm.async_compute(600_000_000, 4)
        outcome = {}

        def wait_long():
            outcome["done"] = f.wait(timeout_s=3600)

        def call_long():
            try:
                sm.compute(600_000_000, 5, timeout_s=3600)
                outcome["call"] = "returned"
            except chimaera.Error as e:
                outcome["call"] = e.code_name

        threads = [threading.Thread(target=wait_long),
                   threading.Thread(target=call_long)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        chimaera.disconnect()
        took = time.monotonic() - t0
        try:
            for t in threads:
                t.join(10)
                self.assertFalse(t.is_alive())
            self.assertLess(took, 1.5)
            self.assertFalse(outcome["done"])
            self.assertNotEqual(outcome["call"], "returned")
        finally:
            chimaera.connect()
        chimaera.SmallMessage(sm.pool_id).destroy()

    def test_connect_to_another_runtime_needs_a_disconnect(self):
        other = "/nonexistent/other_runtime.yaml"
        with self.assertRaises(chimaera.Error) as cm:
            chimaera.connect(other)
        self.assertEqual(cm.exception.code_name, "InvalidArgument")
        self.assertEqual(os.environ.get("CHI_SERVER_CONF"), RUNTIME.conf)
        chimaera.disconnect()
        try:
            with self.assertRaises(chimaera.Error) as cm:
                chimaera.connect(other)
            self.assertEqual(cm.exception.code_name, "NotFound")
            # The failed connect put CHI_SERVER_CONF back.
            self.assertEqual(os.environ.get("CHI_SERVER_CONF"), RUNTIME.conf)
        finally:
            chimaera.connect()
        self.assertEqual(chimaera.Admin().echo(7), 7)


class AdminTest(unittest.TestCase):

    def setUp(self):
        self.admin = chimaera.Admin()

    def test_noop_echo_stat(self):
        self.admin.noop()
        self.assertEqual(self.admin.echo(2**64 - 1), 2**64 - 1)
        self.assertIsInstance(self.admin.stat(), str)
        self.assertIsNone(self.admin.async_noop().result())
        self.assertEqual(self.admin.async_echo(42).result(timeout_s=10), 42)
        self.assertEqual(self.admin.fan_out(4), self.admin.async_fan_out(4)
                         .result())

    def test_create_lookup_destroy_pool(self):
        pool, existed = self.admin.get_or_create_pool("py_admin_pool",
                                                      "small_message", 2)
        self.assertFalse(existed)
        self.assertIsInstance(pool, chimaera.PoolId)
        again, existed = self.admin.get_or_create_pool("py_admin_pool",
                                                       "small_message", 2)
        self.assertTrue(existed)
        self.assertEqual(again, pool)
        self.assertEqual(self.admin.lookup_pool("py_admin_pool"), pool)
        self.assertIn("small_message", self.admin.list_modules())
        names = {p["name"]: p for p in self.admin.list_pools()}
        self.assertEqual(names["py_admin_pool"]["containers"], 2)
        self.assertEqual(names["py_admin_pool"]["id"], pool)
        self.admin.destroy_pool(pool)
        with self.assertRaises(chimaera.Error) as cm:
            self.admin.lookup_pool("py_admin_pool")
        self.assertEqual(cm.exception.code, chimaera.StatusCode.NotFound)

    def test_pin_container(self):
        pool, _ = self.admin.get_or_create_pool("py_pin_pool",
                                                "small_message", 2)
        self.admin.pin_container(pool, 1, 0)
        self.admin.pin_container(pool, 1, 0)  # again, same worker: fine
        with self.assertRaises(chimaera.Error) as cm:
            self.admin.pin_container(pool, 0, 999)
        self.assertEqual(cm.exception.code_name, "InvalidArgument")
        with self.assertRaises(chimaera.Error) as cm:
            self.admin.pin_container(pool, 7, 0)
        self.assertEqual(cm.exception.code_name, "NotFound")
        self.admin.destroy_pool(pool)

    def test_unknown_module_is_not_found(self):
        with self.assertRaises(chimaera.Error) as cm:
            self.admin.get_or_create_pool("py_bad_pool", "no_such_module")
        e = cm.exception
        self.assertEqual(e.code, int(chimaera.StatusCode.NotFound))
        self.assertEqual(e.code_name, "NotFound")
        self.assertIn("no_such_module", e.message)
        self.assertIn("NotFound", str(e))
        self.assertIsInstance(e, Exception)

    def test_names_that_are_not_utf8_come_back_escaped(self):
        with self.assertRaises(chimaera.Error) as cm:
            self.admin.lookup_pool(b"\xff\xfe")
        self.assertEqual(cm.exception.code, chimaera.StatusCode.NotFound)
        sm = chimaera.SmallMessage.create(b"py_bad\xffname")
        try:
            names = [p["name"] for p in self.admin.list_pools()]
            self.assertIn("py_bad\\xffname", names)
            self.assertIsInstance(self.admin.stat(), str)
        finally:
            sm.destroy()

    def test_pool_ids_compare_with_other_types(self):
        pid = chimaera.PoolId(1, 5)
        self.assertFalse(pid == None)  # noqa: E711
        self.assertTrue(pid != 1)
        self.assertNotIn(pid, [None, 1])
        table = {1: "int", chimaera.PoolId(0, 1): "pool"}
        self.assertEqual(table[1], "int")
        self.assertEqual(table[chimaera.PoolId(0, 1)], "pool")
        self.assertEqual(chimaera.PoolId(1, 5), pid)

    def test_pool_ids_pickle_and_copy(self):
        pid = chimaera.PoolId(3, 4000000000)
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(pid, proto))
            self.assertEqual(back, pid)
            self.assertEqual((back.node_id, back.unique), (3, 4000000000))
        self.assertEqual(copy.deepcopy(pid), pid)
        # A pool made here is addressable through its unpickled id.
        sm = chimaera.SmallMessage.create("py_pickled_id")
        try:
            again = chimaera.SmallMessage(pickle.loads(pickle.dumps(sm.pool_id)))
            self.assertEqual(again.echo(b"abc"), b"abc")
        finally:
            sm.destroy()

    def test_clients_pickle_as_clients_of_the_same_pool(self):
        kvs = chimaera.Kvs.create("py_pickled_kvs", 2)
        sm = chimaera.SmallMessage.create("py_pickled_sm")
        cmp = chimaera.Compressor.create("py_pickled_cmp")
        try:
            kvs.put(b"k", b"v")
            for proto in range(pickle.HIGHEST_PROTOCOL + 1):
                k2 = pickle.loads(pickle.dumps(kvs, proto))
                self.assertEqual(k2.pool_id, kvs.pool_id)
                self.assertEqual(k2.num_containers, 2)
                self.assertEqual(k2.get(b"k"), b"v")
                s2 = pickle.loads(pickle.dumps(sm, proto))
                self.assertEqual(s2.echo(b"x"), b"x")
                c2 = pickle.loads(pickle.dumps(cmp, proto))
                self.assertEqual(c2.pool_id, cmp.pool_id)
                a2 = pickle.loads(pickle.dumps(self.admin, proto))
                a2.noop()
                fut = sm.async_echo(b"y")
                with self.assertRaises(TypeError):
                    pickle.dumps(fut, proto)
                self.assertEqual(fut.result(), b"y")
            # A forked child unpickles the parent's client and uses it.
            blob = pickle.dumps(kvs)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = 0 if pickle.loads(blob).get(b"k") == b"v" else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        finally:
            kvs.destroy()
            sm.destroy()
            cmp.destroy()

    def test_bad_pool_name_is_invalid_argument(self):
        with self.assertRaises(chimaera.Error) as cm:
            chimaera.SmallMessage.create("x" * 200)
        self.assertEqual(cm.exception.code_name, "InvalidArgument")


class SmallMessageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.sm = chimaera.SmallMessage.create("py_small_message", containers=2)

    @classmethod
    def tearDownClass(cls):
        cls.sm.destroy()

    def test_sync(self):
        self.sm.noop()
        data = bytes(range(256)) * 10
        self.assertEqual(self.sm.echo(data), data)
        self.assertEqual(self.sm.echo(b""), b"")
        self.assertEqual(self.sm.echo(bytearray(b"ab\0c")), b"ab\0c")
        self.assertEqual(self.sm.compute(1000, 7), compute_kernel(1000, 7))
        other = chimaera.SmallMessage(self.sm.pool_id)
        self.assertEqual(other.echo(b"same pool"), b"same pool")

    def test_async(self):
        self.assertIsNone(self.sm.async_noop().result())
        futures = [self.sm.async_echo(b"msg %d" % i) for i in range(20)]
        computes = [self.sm.async_compute(100, i) for i in range(5)]
        for i, f in enumerate(futures):
            self.assertEqual(f.result(timeout_s=10), b"msg %d" % i)
            self.assertTrue(f.done())
            self.assertEqual(f.result(), b"msg %d" % i)  # repeatable
        for i, f in enumerate(computes):
            self.assertTrue(f.wait())
            self.assertEqual(f.result(), compute_kernel(100, i))

    def test_future_wait_with_timeout(self):
        # About 0.2-1 s of work in the runtime.
        f = self.sm.async_compute(300_000_000, 1)
        self.assertFalse(f.wait(timeout_s=0.001))
        self.assertFalse(f.done())
        with self.assertRaises(chimaera.Error) as cm:
            f.result(timeout_s=0)
        self.assertEqual(cm.exception.code, chimaera.StatusCode.Timeout)
        self.assertTrue(f.wait(timeout_s=60))
        self.assertIsInstance(f.result(), int)
        self.assertIn("done", repr(f))

    def test_ctrl_c_interrupts_waits(self):
        # A compute of 1.5e9 iterations takes seconds; SIGINT 0.2 s in.
        def interrupt_soon():
            timer = threading.Timer(0.2, os.kill,
                                    (os.getpid(), signal.SIGINT))
            timer.start()
            return timer
        # A synchronous call: abandoned, and KeyboardInterrupt at once.
        timer = interrupt_soon()
        t0 = time.monotonic()
        with self.assertRaises(KeyboardInterrupt):
            self.sm.compute(1_500_000_000, 3, timeout_s=60)
        self.assertLess(time.monotonic() - t0, 1.5)
        timer.join()
        # A Future's wait: the task stays pending and the Future usable.
        f = self.sm.async_compute(1_500_000_000, 4)
        timer = interrupt_soon()
        t0 = time.monotonic()
        with self.assertRaises(KeyboardInterrupt):
            f.wait(timeout_s=60)
        self.assertLess(time.monotonic() - t0, 1.5)
        timer.join()
        # Another thread waits on it long; this one's short wait still ends
        # at its own deadline.
        waiter = threading.Thread(target=f.wait, args=(60,))
        waiter.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        done = f.wait(timeout_s=0.1)
        if not done:
            self.assertLess(time.monotonic() - t0, 1.0)
        waiter.join(60)
        self.assertFalse(waiter.is_alive())
        self.assertIsInstance(f.result(timeout_s=60), int)

    def run_script(self, script, timeout_s=60):
        """Runs `script` in a fresh interpreter attached to this runtime;
        returns (seconds taken, exit status, output)."""
        env = dict(os.environ, CHI_SERVER_CONF=RUNTIME.conf)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", script], env=env,
                              capture_output=True, text=True,
                              timeout=timeout_s)
        return (time.monotonic() - t0, proc.returncode,
                proc.stdout + proc.stderr)

    def test_exit_does_not_wait_for_a_daemon_threads_call(self):
        # Before, the exit's disconnect waited for the call's task: seconds.
        took, rc, out = self.run_script("""
import chimaera, threading, time
chimaera.connect()
sm = chimaera.SmallMessage.create("py_small_message", containers=2)
def long_wait():
    sm.async_compute(3_000_000_000, 7).wait(timeout_s=3600)
def poll():
    while True:
        chimaera.is_connected()
threading.Thread(target=long_wait, daemon=True).start()
for _ in range(3):
    threading.Thread(target=poll, daemon=True).start()
time.sleep(0.3)
print("main done")
""")
        self.assertEqual(rc, 0, out)
        self.assertIn("main done", out)
        self.assertLess(took, 5.0, out)

    def test_a_forked_child_leaves_the_parents_tasks_alone(self):
        # A thread is inside a call when the main thread forks. The child
        # must not hang at exit on the lock that thread held, and must not
        # abandon or free the parent's task.
        took, rc, out = self.run_script("""
import chimaera, os, sys, threading, time
chimaera.connect()
sm = chimaera.SmallMessage.create("py_small_message", containers=2)
r = sm.async_echo(b"resolved")
assert r.result(timeout_s=30) == b"resolved"
f = sm.async_compute(600_000_000, 5)
t = threading.Thread(target=lambda: sm.compute(600_000_000, 6,
                                               timeout_s=60))
t.start()
time.sleep(0.3)
pid = os.fork()
if pid == 0:
    try:
        f.result(timeout_s=1)
        os._exit(3)
    except chimaera.Error as e:
        if e.code_name != "Aborted":
            os._exit(4)
    if sm.echo(b"child") != b"child":
        os._exit(5)
    if r.result() != b"resolved":  # a resolved Future keeps its result
        os._exit(6)
    chimaera.disconnect()
    sys.exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("child hung")
    sys.exit(1)
print("child", os.waitstatus_to_exitcode(status))
print("parent", isinstance(f.result(timeout_s=60), int))
t.join()
""")
        self.assertEqual(rc, 0, out)
        self.assertIn("child 0", out)
        self.assertIn("parent True", out)

    def test_a_signal_handler_cannot_disconnect_inside_a_call(self):
        # The Ctrl-C check runs signal handlers in the middle of a call; a
        # handler's disconnect() there would wait for that call for good.
        def handler(signum, frame):
            chimaera.disconnect()
        old = signal.signal(signal.SIGUSR1, handler)
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
        try:
            timer.start()
            t0 = time.monotonic()
            with self.assertRaises(chimaera.Error) as cm:
                self.sm.compute(1_500_000_000, 9, timeout_s=60)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(cm.exception.code_name, "InvalidArgument")
            self.assertIn("disconnect()", cm.exception.message)
        finally:
            timer.join()
            signal.signal(signal.SIGUSR1, old)
        self.assertTrue(chimaera.is_connected())
        self.assertEqual(self.sm.echo(b"still"), b"still")

    def test_dropped_future_is_abandoned(self):
        f = self.sm.async_compute(100_000_000, 2)
        g = self.sm.async_echo(b"dropped")
        del f, g
        gc.collect()
        # The runtime still serves this client.
        self.assertEqual(self.sm.echo(b"after"), b"after", )

    def test_bad_arguments(self):
        with self.assertRaises(TypeError):
            self.sm.echo(123)
        with self.assertRaises(TypeError):
            self.sm.compute(-1, 0)
        with self.assertRaises(TypeError):
            self.sm.compute(2**64, 0)
        with self.assertRaises(ValueError):
            self.sm.noop(timeout_s=-1)
        with self.assertRaises(ValueError):
            self.sm.async_noop().wait(timeout_s=float("nan"))
        with self.assertRaises(TypeError):
            chimaera.SmallMessage("not a pool id")

    def test_threads(self):
        errors = []

        def worker(n):
            try:
                for i in range(20):
                    msg = b"t%d-%d" % (n, i)
                    if self.sm.echo(msg) != msg:
                        errors.append(msg)
                    if self.sm.async_echo(msg).result() != msg:
                        errors.append(msg)
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,))
                   for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])


class CompressorTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.comp = chimaera.Compressor.create("py_compressor")

    @classmethod
    def tearDownClass(cls):
        cls.comp.destroy()

    def test_round_trip(self):
        data = b"chimaera python binding " * 1000
        for algo in ("zstd", "lz4"):
            packed = self.comp.compress(data, algo=algo)
            self.assertLess(len(packed), len(data))
            self.assertEqual(self.comp.decompress(packed, len(data), algo),
                             data)
            f = self.comp.async_compress(data, algo, 1)
            packed = f.result(timeout_s=10)
            g = self.comp.async_decompress(packed, len(data), algo=algo)
            self.assertEqual(g.result(timeout_s=10), data)

    def test_errors(self):
        with self.assertRaises(ValueError):
            self.comp.compress(b"x", algo="gzip")
        packed = self.comp.compress(b"hello" * 100)
        with self.assertRaises(chimaera.Error) as cm:
            self.comp.decompress(packed, 3)  # wrong original size
        self.assertEqual(cm.exception.code,
                         chimaera.StatusCode.InvalidArgument)
        with self.assertRaises(chimaera.Error):
            self.comp.async_decompress(b"not zstd at all", 100).result()


class KvsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.kvs = chimaera.Kvs.create("py_kvs", containers=3)

    @classmethod
    def tearDownClass(cls):
        cls.kvs.destroy()

    def test_sync(self):
        kvs = self.kvs
        self.assertEqual(kvs.num_containers, 3)
        self.assertFalse(kvs.put(b"alpha", b"1"))
        self.assertTrue(kvs.put(b"alpha", b"one"))
        self.assertEqual(kvs.get(b"alpha"), b"one")
        kvs.put("beta", b"\0\xff")  # str keys are UTF-8
        self.assertEqual(kvs.get(b"beta"), b"\0\xff")
        self.assertEqual(kvs.scan(b"", prefix=False)[:2], [b"alpha", b"beta"])
        kvs.delete(b"alpha")
        with self.assertRaises(chimaera.Error) as cm:
            kvs.get(b"alpha")
        self.assertEqual(cm.exception.code, chimaera.StatusCode.NotFound)
        self.assertEqual(cm.exception.code_name, "NotFound")
        with self.assertRaises(chimaera.Error) as cm:
            kvs.delete(b"alpha")
        self.assertEqual(cm.exception.code, chimaera.StatusCode.NotFound)
        other = chimaera.Kvs.attach(kvs.pool_id)
        self.assertEqual(other.num_containers, 3)
        self.assertEqual(other.get(b"beta"), b"\0\xff")
        kvs.delete(b"beta")

    def test_async(self):
        kvs = self.kvs
        puts = [kvs.async_put(b"k%03d" % i, b"v%d" % i) for i in range(50)]
        self.assertEqual([f.result(timeout_s=10) for f in puts],
                         [False] * 50)
        gets = [kvs.async_get(b"k%03d" % i) for i in range(50)]
        self.assertEqual([f.result(timeout_s=10) for f in gets],
                         [b"v%d" % i for i in range(50)])
        self.assertEqual(kvs.scan(b"k00", prefix=True),
                         [b"k%03d" % i for i in range(10)])
        self.assertEqual(len(kvs.scan(b"k", max_count=7, prefix=True)), 7)
        missing = kvs.async_get(b"missing")
        with self.assertRaises(chimaera.Error) as cm:
            missing.result()
        self.assertEqual(cm.exception.code, chimaera.StatusCode.NotFound)
        with self.assertRaises(chimaera.Error):  # the error is kept
            missing.result()
        dels = [kvs.async_delete(b"k%03d" % i) for i in range(50)]
        for f in dels:
            self.assertIsNone(f.result(timeout_s=10))
        self.assertEqual(kvs.scan(b"k", prefix=True), [])

    def test_empty_key_is_invalid(self):
        with self.assertRaises(chimaera.Error) as cm:
            self.kvs.put(b"", b"v")
        self.assertEqual(cm.exception.code,
                         chimaera.StatusCode.InvalidArgument)


if __name__ == "__main__":
    unittest.main()
