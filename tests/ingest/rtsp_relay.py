"""A minimal RTSP server for tests: a real ``ffmpeg`` streams RTP, this relays it over RTSP/TCP.

FFmpeg 5.1's RTSP *muxer* can only push to a server (``-rtsp_flags listen`` is a demuxer
option), so a test that needs a camera to *pull* from runs this script as a subprocess::

    python rtsp_relay.py --port 8554 --clip clip.mp4 [--audio]

It starts ``ffmpeg -re -stream_loop -1 -i clip -c:v copy -f rtp rtp://127.0.0.1:<udp>`` with
``-sdp_file``, answers OPTIONS / DESCRIBE (that SDP) / SETUP (TCP interleaved only) / PLAY /
TEARDOWN on ``rtsp://127.0.0.1:<port>/live`` (RFC 2326), and forwards every RTP datagram to
each playing client as an interleaved frame (``$``, channel 0, 16-bit length; RFC 2326 10.12).
With ``--audio`` it serves the clip's audio only (PCMU), a camera that comes back with no video.
Run it in its own session and kill the process group to take ffmpeg down with it (or
SIGSTOP/SIGCONT the group to freeze it with its sockets left open).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def start_ffmpeg(clip: str, sdp_path: Path, audio: bool) -> tuple[subprocess.Popen, socket.socket]:
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    port = rtp.getsockname()[1]
    media = (["-vn", "-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1"] if audio
             else ["-an", "-c:v", "copy", "-payload_type", "96"])
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", clip, *media,
           "-f", "rtp", f"rtp://127.0.0.1:{port}?pkt_size=1200", "-sdp_file", str(sdp_path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (sdp_path.exists() and "m=" in sdp_path.read_text()):
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("rtsp_relay: ffmpeg did not write an SDP")
        time.sleep(0.05)
    return proc, rtp


class Relay:
    def __init__(self, sdp: str, rtp: socket.socket) -> None:
        lines = [ln for ln in sdp.splitlines() if ln and not ln.startswith("a=control")]
        media = next(i for i, ln in enumerate(lines) if ln.startswith("m="))
        lines.insert(media, "a=control:*")
        lines.append("a=control:trackID=0")
        self.sdp = "\r\n".join(lines) + "\r\n"
        self.rtp = rtp
        self.playing: list[socket.socket] = []
        self.lock = threading.Lock()

    def forward(self) -> None:
        while True:
            data = self.rtp.recv(65536)
            frame = b"$\x00" + len(data).to_bytes(2, "big") + data
            with self.lock:
                for client in list(self.playing):
                    try:
                        client.sendall(frame)
                    except OSError:
                        self.playing.remove(client)

    def serve(self, conn: socket.socket, url: str) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ")[0]
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (ln.partition(":") for ln in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    buf += conn.recv(4096)
                buf = buf[length:]
                reply = [f"CSeq: {headers.get('cseq', '0')}"]
                body = ""
                status = "200 OK"
                if method == "OPTIONS":
                    reply.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
                elif method == "DESCRIBE":
                    body = self.sdp
                    reply += [f"Content-Base: {url}/", "Content-Type: application/sdp"]
                elif method == "SETUP":
                    if "TCP" not in headers.get("transport", ""):
                        status = "461 Unsupported Transport"
                    else:
                        reply += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
                                  "Session: 12345678;timeout=60"]
                elif method in ("PLAY", "GET_PARAMETER", "TEARDOWN"):
                    reply.append("Session: 12345678")
                else:
                    status = "501 Not Implemented"
                if body:
                    reply.append(f"Content-Length: {len(body)}")
                with self.lock:
                    conn.sendall((f"RTSP/1.0 {status}\r\n" + "\r\n".join(reply) + "\r\n\r\n"
                                  + body).encode("latin-1"))
                    if method == "PLAY":
                        self.playing.append(conn)
                    elif method == "TEARDOWN" and conn in self.playing:
                        self.playing.remove(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                if conn in self.playing:
                    self.playing.remove(conn)
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--audio", action="store_true", help="serve the clip's audio only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, rtp = start_ffmpeg(args.clip, Path(tmp) / "stream.sdp", args.audio)
        relay = Relay((Path(tmp) / "stream.sdp").read_text(), rtp)
        threading.Thread(target=relay.forward, daemon=True).start()
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", args.port))
        server.listen()
        url = f"rtsp://127.0.0.1:{args.port}/live"
        print(f"rtsp_relay: serving {url}", flush=True)
        try:
            while proc.poll() is None:
                conn, _ = server.accept()
                threading.Thread(target=relay.serve, args=(conn, url), daemon=True).start()
        finally:
            proc.kill()


if __name__ == "__main__":
    main()
