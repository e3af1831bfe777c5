"""A real SMTP server for phiwatch's notification tests (aiosmtpd), on loopback.

    python3 smtp_server.py PORT MAILDIR [--starttls CERT KEY | --implicit CERT KEY]
                                        [--auth USER:PASSWORD]

Every accepted message is written to MAILDIR/<n>.eml. Recipients script failures:
  tempfail-N@...   answers 451 to the first N deliveries of a message id, then accepts
  reject@...       answers 550 (permanent)
--starttls offers STARTTLS and refuses mail before it; --implicit speaks TLS from the first
byte (SMTPS); --auth requires AUTH PLAIN/LOGIN with these credentials (535 otherwise).
The server prints "ready" once it listens, and stops on SIGTERM.
"""
import argparse
import email
import os
import signal
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


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
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("maildir")
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--implicit", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth", metavar="USER:PASSWORD")
    a = p.parse_args()
    os.makedirs(a.maildir, exist_ok=True)
    kwargs = {}
    pair = a.starttls or a.implicit
    if pair:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pair[0], pair[1])
        if a.starttls:
            kwargs.update(tls_context=ctx, require_starttls=True)
        else:
            kwargs.update(ssl_context=ctx)
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            # handled=False: aiosmtpd itself answers 235, or 535 on failure.
            return AuthResult(success=ok, handled=False)

        # Implicit TLS is TLS too; aiosmtpd only knows about STARTTLS when deciding.
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=not a.implicit,
        )
    controller = Controller(Scripted(a.maildir), hostname="127.0.0.1", port=a.port, **kwargs)
    controller.start()
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    controller.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    main()
