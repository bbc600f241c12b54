#!/usr/bin/env python3
"""Serves an environment's `current` release on loopback for the delivery example.

    serve.py start DIR PORT   start in the background (once), wait until it answers
    serve.py stop DIR         stop it

Each request reads DIR/current afresh, so a deploy or rollback (a switch of that link)
shows at once. The server stops by itself after ten idle minutes.
"""
import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time

IDLE_SECONDS = 600


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start(directory, port):
    if answers(port):
        return
    os.makedirs(directory, exist_ok=True)
    log = open(os.path.join(directory, "server.log"), "ab")
    process = subprocess.Popen(
        [sys.executable, __file__, "run", directory, str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    with open(os.path.join(directory, "server.pid"), "w") as f:
        f.write(str(process.pid))
    deadline = time.time() + 10
    while not answers(port):
        if process.poll() is not None or time.time() > deadline:
            sys.exit(f"the server for {directory} did not start; see {directory}/server.log")
        time.sleep(0.05)
    print(f"serving {directory}/current at http://127.0.0.1:{port}/")


def stop(directory):
    try:
        with open(os.path.join(directory, "server.pid")) as f:
            os.kill(int(f.read()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def run(directory, port):
    last = [time.time()]

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            last[0] = time.time()
            # Resolve `current` on every request: the link is what a deploy switches.
            self.directory = os.path.realpath(os.path.join(directory, "current"))
            return super().translate_path(path)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=directory))

    def idle():
        while time.time() - last[0] < IDLE_SECONDS:
            time.sleep(5)
        server.shutdown()

    threading.Thread(target=idle, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    command, directory = sys.argv[1], sys.argv[2]
    if command == "start":
        start(directory, int(sys.argv[3]))
    elif command == "stop":
        stop(directory)
    elif command == "run":
        run(directory, int(sys.argv[3]))
    else:
        sys.exit(__doc__)
