"""A receiving SMTP server for Posthorn's tests, on aiosmtpd.

It advertises neither PIPELINING nor DSN, answers each RCPT by the
recipient's local part, and writes every accepted message to DUMP_DIR.

    python3 aiosmtpd_peer.py PORT DUMP_DIR [CERT KEY]

Local parts: bounce* -> 550 5.1.1, defer* -> 451 4.3.0, full* -> 552 5.2.2,
anything else -> 250. With CERT and KEY it offers STARTTLS.
"""

import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, dump_dir):
        self.dump_dir = dump_dir
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("bounce"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("defer"):
            return "451 4.3.0 Temporary lookup failure, try again later"
        if local.startswith("full"):
            return "552 5.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        path = os.path.join(self.dump_dir, f"{n}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(f"X-Peer-Mail-From: {envelope.mail_from}\r\n".encode())
            for rcpt in envelope.rcpt_tos:
                f.write(f"X-Peer-Rcpt-To: {rcpt}\r\n".encode())
            tls = "yes" if session.ssl else "no"
            f.write(f"X-Peer-TLS: {tls}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return f"250 2.0.0 Ok: queued as peer-{n}"


def main():
    port = int(sys.argv[1])
    dump_dir = sys.argv[2]
    context = None
    if len(sys.argv) >= 5:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
    controller = Controller(
        Handler(dump_dir),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=False,
        enable_SMTPUTF8=True,
        data_size_limit=1024 * 1024,
    )
    controller.start()
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
