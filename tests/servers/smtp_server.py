"""A real SMTP server for phiwatch's notification tests (aiosmtpd), on loopback.

    python3 smtp_server.py PORT MAILDIR [CERT KEY]

With CERT and KEY (PEM) the server offers STARTTLS and refuses mail before it.

Every accepted message is written to MAILDIR/<n>.eml. Recipients script failures:
  tempfail-N@...   answers 451 to the first N deliveries of a message id, then accepts
  reject@...       answers 550 (permanent)
The server prints "ready" once it listens, and stops on SIGTERM.
"""
import asyncio
import email
import os
import signal
import sys

from aiosmtpd.controller import Controller


class Scripted:
    def __init__(self, maildir):
        self.maildir = maildir
        self.tries = {}
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local == "reject":
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        mid = msg.get("Message-ID", "")
        for rcpt in envelope.rcpt_tos:
            local = rcpt.split("@")[0]
            if local.startswith("tempfail-"):
                limit = int(local.split("-")[1])
                seen = self.tries.get(mid, 0)
                self.tries[mid] = seen + 1
                if seen < limit:
                    return "451 4.3.0 try again later"
        self.count += 1
        path = os.path.join(self.maildir, "%06d.eml" % self.count)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.content)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


def main():
    port, maildir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(maildir, exist_ok=True)
    kwargs = {}
    if len(sys.argv) == 5:
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        kwargs = {"tls_context": ctx, "require_starttls": True}
    controller = Controller(Scripted(maildir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    controller.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    main()
