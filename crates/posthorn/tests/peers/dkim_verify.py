"""Verifies the topmost DKIM signature of the message on stdin with dkimpy
(Debian's python3-dkim), an implementation independent of Posthorn's.

    python3 dkim_verify.py RECORD_NAME RECORD_VALUE < message

The key is never looked up in DNS: the lookup is answered with
RECORD_VALUE when it asks for RECORD_NAME, and finds nothing otherwise.
Exit status 0 when the signature verifies, 1 when it does not.
"""

import logging
import sys

import dkim


def main():
    name, value = sys.argv[1], sys.argv[2]
    wanted = name.rstrip(".").lower()
    asked = []

    def dnsfunc(qname, timeout=5):
        text = qname.decode() if isinstance(qname, bytes) else qname
        asked.append(text)
        if text.rstrip(".").lower() == wanted:
            return value.encode()
        return None

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format="dkimpy: %(message)s")
    message = sys.stdin.buffer.read()
    try:
        ok = dkim.verify(message, logger=logging.getLogger("dkim"), dnsfunc=dnsfunc, minkey=2048)
    except dkim.DKIMException as e:
        print(f"error: {e}", file=sys.stderr)
        ok = False
    print(f"{'pass' if ok else 'fail'} (key looked up: {', '.join(asked) or 'none'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
