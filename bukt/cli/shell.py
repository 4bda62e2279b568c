"""`bukt shell`: an interactive prompt, like redis-cli, on any target (attached, bukt://
or http://).

    $ bukt shell -b sessions
    local/sessions> SET greeting "hello, world" EX 60
    OK
    local/sessions> GET greeting
    "hello, world"
    local/sessions> HELP SET

Words are split as a POSIX shell splits them (quotes, backslashes). Line editing and
history come from readline, the history kept in $BUKTCLI_HISTFILE (default
~/.bukt_history). A command's error is printed as `(error) ...` and the prompt goes on;
with stdin not a terminal the lines are read as a script and the exit code is that of
the last failing command (0 when none failed).
"""
import os
import shlex
import sys

from bukt.cli.common import (NOT_FOUND, OK, REFUSED, CliError, explain, open_target,
                             show_bytes, target_args)
from bukt.cli.keys import scan_keys
from bukt.cli.targets import raw

__all__ = ["shell_args", "shell", "Shell", "COMMANDS"]

# name -> (usage, help). The one table HELP reads and the dispatcher checks.
COMMANDS = {
    "GET": ("GET key", "the key's value, or (nil)"),
    "SET": ("SET key value [EX seconds] [NX|XX]",
            "store a value; EX: a TTL; NX: only if absent; XX: only if present"),
    "DEL": ("DEL key [key ...]", "delete keys; how many existed"),
    "EXISTS": ("EXISTS key [key ...]", "how many of the keys exist"),
    "INCR": ("INCR key [by]", "add `by` (default 1) to a decimal value"),
    "DECR": ("DECR key [by]", "subtract `by` (default 1)"),
    "TTL": ("TTL key", "seconds left; -1 without a TTL, -2 when absent"),
    "EXPIRE": ("EXPIRE key seconds", "give the key a TTL; 1 if it existed"),
    "PERSIST": ("PERSIST key", "remove the key's TTL; 1 if it existed"),
    "MGET": ("MGET key [key ...]", "the values, (nil) where absent"),
    "MSET": ("MSET key value [key value ...]", "store several values"),
    "SCAN": ("SCAN [prefix] [MATCH glob] [COUNT n]",
             "the bucket's keys (all pages), those matching the glob; at most n"),
    "KEYS": ("KEYS glob", "the keys matching the glob (KEYS * for all)"),
    "FLUSH": ("FLUSH", "delete every key of the bucket (asks first)"),
    "USE": ("USE bucket", "work on another bucket (over bukt:// its token's only)"),
    "BUCKETS": ("BUCKETS", "the bucket names"),
    "HELP": ("HELP [command]", "the commands, or one command's usage"),
    "QUIT": ("QUIT", "leave (also EXIT, or Ctrl-D)"),
}


class Usage(Exception):
    """A command given the wrong words: its usage line is the message."""


def shell_args(p):
    target_args(p)
    p.epilog = (p.epilog or "") + "\n\ncommands at the prompt: " + \
        ", ".join(COMMANDS) + " (HELP COMMAND for one)"


def _quoted(value) -> str:
    """A value as redis-cli shows one: in double quotes, escapes for what is not
    printable text; integers as (integer) N."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"(integer) {value}"
    text = show_bytes(raw(value))
    if text.startswith(("b'", 'b"')):                       # not UTF-8: a bytes literal
        return '"' + text[2:-1].replace('"', '\\"') + '"'
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Shell:
    def __init__(self, target, out=None):
        self.t, self.out = target, out or sys.stdout
        self.bucket = target.bucket

    @property
    def prompt(self):
        where = getattr(self.t, "where", None) or "local"
        return f"{where}/{self.bucket or '(no bucket: USE name)'}> "

    def say(self, line=""):
        print(line, file=self.out, flush=True)

    def run_line(self, line) -> int:
        """Runs one line; its exit code (common.py's) and prints its answer."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.say(f"(error) {e}")
            return REFUSED
        if not words:
            return OK
        name, rest = words[0].upper(), words[1:]
        if name in ("QUIT", "EXIT"):
            raise EOFError
        if name not in COMMANDS:
            self.say(f"(error) unknown command {words[0]!r}; HELP lists them")
            return REFUSED
        try:
            return getattr(self, "do_" + name.lower())(rest) or OK
        except Usage:
            self.say(f"(error) usage: {COMMANDS[name][0]}")
            return REFUSED
        except Exception as e:              # one line, as the command line says it
            known = explain(e, None)
            if known is None:
                raise
            self.say(f"(error) {known[1]}")
            return known[0]

    # -- the commands ----------------------------------------------------------------------
    def _b(self):
        if not self.bucket:
            raise CliError(REFUSED, "no bucket: USE name first (BUCKETS lists them)")
        return self.bucket

    @staticmethod
    def _need(rest, lo, hi=None):
        if len(rest) < lo or (hi is not None and len(rest) > hi):
            raise Usage

    @staticmethod
    def _k(word) -> bytes:
        return os.fsencode(word)

    def do_get(self, rest):
        self._need(rest, 1, 1)
        v = self.t.get(self._b(), self._k(rest[0]))
        self.say("(nil)" if v is None else _quoted(raw(v)))
        return OK if v is not None else NOT_FOUND

    def do_set(self, rest):
        self._need(rest, 2)
        key, value, opts = rest[0], rest[1], [w.upper() for w in rest[2:]]
        ttl, nx, xx = None, False, False
        i = 0
        while i < len(opts):
            if opts[i] == "EX" and i + 1 < len(opts):
                ttl = self._seconds(rest[2 + i + 1])
                i += 2
            elif opts[i] == "PX" and i + 1 < len(opts):
                ttl = self._seconds(rest[2 + i + 1]) / 1000
                i += 2
            elif opts[i] in ("NX", "XX"):
                nx, xx = nx or opts[i] == "NX", xx or opts[i] == "XX"
                i += 1
            else:
                raise Usage
        if nx and xx:
            raise Usage
        version = self.t.set(self._b(), self._k(key), self._k(value), ttl=ttl, nx=nx, xx=xx)
        self.say("(nil)" if version is None else "OK")
        return OK if version is not None else NOT_FOUND

    @staticmethod
    def _seconds(word):
        try:
            s = float(word)
        except ValueError:
            raise CliError(REFUSED, f"{word!r} is not a number") from None
        if not s > 0:
            raise CliError(REFUSED, "a TTL is above zero")
        return s

    def do_del(self, rest):
        self._need(rest, 1)
        self.say(_quoted(self.t.delete(self._b(), [self._k(k) for k in rest])))

    def do_exists(self, rest):
        self._need(rest, 1)
        self.say(_quoted(self.t.exists(self._b(), [self._k(k) for k in rest])))

    def _int(self, word):
        try:
            return int(word)
        except ValueError:
            raise CliError(REFUSED, f"{word!r} is not an integer") from None

    def do_incr(self, rest, sign=1):
        self._need(rest, 1, 2)
        by = self._int(rest[1]) if len(rest) > 1 else 1
        self.say(_quoted(self.t.incr(self._b(), self._k(rest[0]), by=sign * by)))

    def do_decr(self, rest):
        return self.do_incr(rest, -1)

    def do_ttl(self, rest):
        self._need(rest, 1, 1)
        exists, seconds = self.t.ttl(self._b(), self._k(rest[0]))
        if not exists:
            self.say("(integer) -2")
        elif seconds is None:
            self.say("(integer) -1")
        else:
            self.say(f"{seconds:.3f}")

    def do_expire(self, rest):
        self._need(rest, 2, 2)
        self.say(_quoted(int(bool(self.t.expire(self._b(), self._k(rest[0]),
                                               self._seconds(rest[1]))))))

    def do_persist(self, rest):
        self._need(rest, 1, 1)
        self.say(_quoted(int(bool(self.t.persist(self._b(), self._k(rest[0]))))))

    def do_mget(self, rest):
        self._need(rest, 1)
        for i, v in enumerate(self.t.mget(self._b(), [self._k(k) for k in rest]), 1):
            self.say(f"{i}) " + ("(nil)" if v is None else _quoted(raw(v))))

    def do_mset(self, rest):
        if not rest or len(rest) % 2:
            raise Usage
        self.t.mset(self._b(), {self._k(k): self._k(v) for k, v in zip(rest[::2], rest[1::2])})
        self.say("OK")

    def do_scan(self, rest):
        prefix, match, limit = b"", None, None
        i = 0
        while i < len(rest):
            word = rest[i].upper()
            if word == "MATCH" and i + 1 < len(rest):
                match, i = self._k(rest[i + 1]), i + 2
            elif word == "COUNT" and i + 1 < len(rest):
                limit, i = self._int(rest[i + 1]), i + 2
            elif i == 0:
                prefix, i = self._k(rest[0]), 1
            else:
                raise Usage
        self._keys(prefix, match, limit)

    def do_keys(self, rest):
        self._need(rest, 1, 1)
        self._keys(b"", self._k(rest[0]), None)

    def _keys(self, prefix, match, limit):
        n = 0
        for n, k in enumerate(scan_keys(self.t, self._b(), prefix, match, limit), 1):
            self.say(f"{n}) {_quoted(k)}")
        if not n:
            self.say("(empty array)")

    def do_flush(self, rest):
        self._need(rest, 0, 0)
        bucket = self._b()
        answer = self.ask(f"delete every key of bucket {bucket!r}? type its name: ")
        if answer.strip() != bucket:
            self.say("(error) not flushed")
            return REFUSED
        self.say(_quoted(self.t.flush(bucket)))

    def ask(self, question):
        return input(question)

    def do_use(self, rest):
        self._need(rest, 1, 1)
        if self.t.kind == "tcp" and rest[0] != self.t.bucket:
            raise CliError(REFUSED, f"over bukt:// this connection works on bucket "
                                    f"{self.t.bucket!r} only: open the shell with that "
                                    "bucket's token, or use http://")
        self.t.bucket_info(rest[0])          # BucketNotFound: the error line
        self.bucket = rest[0]
        self.say("OK")

    def do_buckets(self, rest):
        self._need(rest, 0, 0)
        for i, name in enumerate(self.t.buckets(), 1):
            self.say(f"{i}) {name}")

    def do_help(self, rest):
        if rest:
            name = rest[0].upper()
            if name not in COMMANDS:
                self.say(f"(error) unknown command {rest[0]!r}")
                return REFUSED
            usage, text = COMMANDS[name]
            self.say(f"  {usage}\n  {text}")
            return OK
        width = max(len(u) for u, _ in COMMANDS.values())
        for usage, text in COMMANDS.values():
            self.say(f"  {usage:<{width}}  {text}")


def _readline(history):
    try:
        import readline
    except ImportError:                    # no readline: plain input() still works
        return None
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)
    names = sorted(COMMANDS)

    def complete(text, state):
        hits = [n + " " for n in names if n.startswith(text.upper())]
        return hits[state] if state < len(hits) else None
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    return readline


def shell(args):
    interactive = sys.stdin.isatty()
    history = os.environ.get("BUKTCLI_HISTFILE") or os.path.expanduser("~/.bukt_history")
    with open_target(args) as t:
        if getattr(args, "bucket", None) and t.kind != "tcp":
            t.bucket_info(args.bucket)        # a wrong -b: one error line, exit 3
        sh = Shell(t)
        rl = _readline(history) if interactive else None
        if interactive:
            print("bukt shell: HELP for the commands, QUIT to leave", flush=True)
        last_failure = OK
        try:
            while True:
                try:
                    line = input(sh.prompt if interactive else "")
                except KeyboardInterrupt:     # Ctrl-C drops the line, as a shell does
                    print()
                    continue
                try:
                    code = sh.run_line(line)
                except EOFError:
                    break
                if code not in (OK, NOT_FOUND):
                    last_failure = code
        except EOFError:
            if interactive:
                print()
        finally:
            if rl is not None:
                try:
                    rl.write_history_file(history)
                except OSError:
                    pass
    # at a prompt the person saw each error; a script's caller learns of them here
    return OK if interactive else last_failure

