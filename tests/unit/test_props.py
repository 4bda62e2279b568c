"""Property tests: random operation sequences on the shared-memory store and on the
reference model (tests/support/model.py) must give the same answers.

One state machine drives both sides through the same calls over a small key alphabet
and three buckets of different schemas, moving an injected clock instead of sleeping.
Results are compared exactly (type and value), raised errors by class, TTLs within a
millisecond. Versions are compared only relationally, because the table numbers them
its own way: for one key, while it exists, two writes that the model numbers a < b must
be numbered a' < b' by the store, and a version seen twice must be seen the same both
times; `if_version` is always given the version that side itself reported. Every run
ends with an integrity walk of the store. The segment is big enough that nothing is
evicted (the model does not evict), and no TTL below a millisecond is generated.
"""

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import bukt
from bukt import objects
from model import MAX_KEY, MAX_VALUE, Model
from names import unique_name

T0 = 1_700_000_000_000                      # ms since the epoch where every run starts
BUCKETS = {                                 # name -> create_bucket() settings
    "raw": dict(schema="bytes"),
    "text": dict(schema="str", eviction="none", default_ttl=1.5),
    "nums": dict(schema="int", persist=False, default_ttl=4),
}
KEYS = [b"a", b"ab", b"b\x00", "c", "\u00e9"]
BAD_KEYS = [b"", b"k" * (MAX_KEY + 1)]     # InvalidArgument, KeyTooLarge
PREFIXES = [b"", b"a", b"b", "c", b"\xc3", b"zz"]
TOO_LARGE = "<value of max_value + 1 bytes>"     # stands for itself in printed examples
VALUES = {                                  # name -> (values that fit, values that may not)
    "raw": ([b"", b"x", b"12", b"-7", "h\u00e9", b"\xff\xfe", b"9223372036854775807"],
            [b"007", b"+5", b" 1", b"abc", b"-9223372036854775808", b"9223372036854775808",
             TOO_LARGE]),
    "text": (["", "x", "h\u00e9", "12", "-3", b"\xc3\xa9"], [b"abc", b"\xff", TOO_LARGE]),
    "nums": ([0, 1, -5, 42, (1 << 63) - 1, "42", b"-3"],
             [-(1 << 63), 1 << 63, "007", "abc", "+5", "", b"1.0"]),
}
DEFAULT = object()                          # a get() default that only `is` can match


def new_store():
    """The store under test: a fresh segment per run, unlinked in teardown. Its index
    has room for 512 stripes and starts with 256, so the `grow` rule can split."""
    return bukt.create(unique_name(), size="8MiB", index_slots=512 * 512)


def values(bucket):
    fit, odd = VALUES[bucket]
    return st.one_of(st.sampled_from(fit), st.sampled_from(fit + odd))


keys = st.sampled_from(KEYS)


def txn_ops(bucket):
    """One operation of a transaction (Bucket.atomic) on `bucket`."""
    v = values(bucket).map(lambda x: value_of(x))
    k1 = st.tuples(keys)
    return st.one_of(
        st.tuples(st.sampled_from(["get", "exists", "version", "ttl", "getdel", "delete",
                                   "persist"]), k1),
        st.tuples(st.just("set"), st.tuples(keys, v), st.fixed_dictionaries({}, optional=dict(
            ttl=ttls, nx=st.just(True), xx=st.just(True), single_read=st.booleans(),
            keepttl=st.booleans(), get=st.booleans()))),
        st.tuples(st.just("getset"), st.tuples(keys, v)),
        st.tuples(st.just("incr"), st.tuples(keys, amounts),
                  st.fixed_dictionaries({}, optional=dict(initial=initials, ttl=ttls))),
        st.tuples(st.just("expire"), st.tuples(keys, st.one_of(valid_ttls, bad_ttls))))
bucket_names = st.sampled_from(sorted(BUCKETS))
bucket_values = bucket_names.flatmap(lambda name: st.tuples(st.just(name), values(name)))
valid_ttls = st.one_of(st.integers(1, 3), st.integers(1, 4000).map(lambda ms: ms / 1000),
                       st.sampled_from([1.001, 2.002, 0.001]))   # 1.001 * 1000 < 1001
bad_ttls = st.sampled_from([0, -1.5])
ttls = st.one_of(st.none(), valid_ttls)
conditions = st.sampled_from(["plain", "plain", "nx", "xx", "if_zero", "if_current",
                              "if_superseded", "if_never"])
amounts = st.sampled_from([1, -1, 7, 0, 1 << 62, -(1 << 62)])
initials = st.sampled_from([0, 10, -3, (1 << 63) - 1, -(1 << 63)])


class Raised:
    """An exception, kept as a result so both sides can be compared."""

    def __init__(self, exc):
        self.exc = exc

    def __repr__(self):
        return f"raised {type(self.exc).__name__}({self.exc})"


def outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:    # noqa: BLE001 - any exception is an answer to compare
        return Raised(exc)


def same(a, b):
    if isinstance(a, Raised) or isinstance(b, Raised):
        return (isinstance(a, Raised) and isinstance(b, Raised)
                and type(a.exc) is type(b.exc))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def as_key(key):
    return key.encode() if isinstance(key, str) else key


def value_of(v):
    return b"v" * (MAX_VALUE + 1) if v is TOO_LARGE else v


class StoreVersusModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = T0
        # objects (values above max_value, bukt/objects) have tests of their own
        # (test_objects.py); here max_object = max_value, so a value above it is
        # refused alike on both sides
        self.model = Model(max_object=MAX_VALUE)
        objects.configure(max_object=MAX_VALUE)
        self.store = new_store()
        self.sides = {"model": self.model, "store": self.store}
        self.handles = {side: {} for side in self.sides}
        # (bucket, key) -> [(model version, store version)] seen since the key was
        # last created: the relation the two numberings must keep.
        self.versions = {}
        try:
            for side in self.sides.values():
                side.set_time(self.now)
            for name in BUCKETS:
                self._create(name)
        except BaseException:
            self.store.close()
            self.store.unlink()
            raise

    def teardown(self):
        try:
            assert self.store.check() == []
        finally:
            objects.configure(max_object=None)
            self.store.close()
            self.store.unlink()

    # -- plumbing
    def _create(self, name):
        got = {side: outcome(s.create_bucket, name, **BUCKETS[name])
               for side, s in self.sides.items()}
        for side, handle in got.items():
            assert not isinstance(handle, Raised), (side, handle)
            self.handles[side][name] = handle
        m, s = (s.bucket_info(name) for s in self.sides.values())
        assert m == s, f"bucket_info({name!r}): model {m!r} != store {s!r}"

    def same(self, what, m, s):
        assert same(m, s), f"{what}: model {m!r} != store {s!r}"

    def both(self, bucket, method, *args, **kwargs):
        """Calls `method` on the bucket on both sides; the two results if they did not
        raise, else None (after checking that both raised the same class)."""
        m = outcome(getattr(self.handles["model"][bucket], method), *args, **kwargs)
        s = outcome(getattr(self.handles["store"][bucket], method), *args, **kwargs)
        what = f"{bucket}.{method}{args}{kwargs or ''}"
        if isinstance(m, Raised) or isinstance(s, Raised):
            self.same(what, m, s)
            return None
        return m, s

    def compare(self, bucket, method, *args, **kwargs):
        got = self.both(bucket, method, *args, **kwargs)
        if got is not None:
            self.same(f"{bucket}.{method}{args}{kwargs or ''}", *got)
        return got

    def observe(self, bucket, key, mv, sv):
        """Records that the model's version `mv` is the store's `sv` for this key."""
        assert (mv is None) == (sv is None), f"version of {key!r}: model {mv}, store {sv}"
        if mv is None:
            return
        assert type(sv) is int, f"version {sv!r} is not an int"
        seen = self.versions.setdefault((bucket, as_key(key)), [])
        for mv2, sv2 in seen:
            assert (mv2 < mv) == (sv2 < sv) and (mv2 == mv) == (sv2 == sv), (
                f"{bucket} {key!r}: store versions {sv2}, {sv} do not follow the order "
                f"of the model's {mv2}, {mv}")
        if (mv, sv) not in seen:
            seen.append((mv, sv))

    def observe_version(self, bucket, key):
        got = self.both(bucket, "version", key)
        if got is not None:
            self.observe(bucket, key, *got)

    @invariant()
    def same_keys_ttls_and_versions(self):
        """Every key as both sides see it, after every step: a difference shows up
        where it is made. (exists, ttl and version read; none consumes a key.)"""
        for bucket in BUCKETS:
            for key in KEYS:
                self.compare(bucket, "exists", key)
                self.ttl(bucket, key)
                self.observe_version(bucket, key)
                if self.handles["model"][bucket].version(key) is None:
                    self.versions.pop((bucket, as_key(key)), None)

    # -- the clock (the model's entries say where the next expiry is)
    @rule(ms=st.one_of(st.integers(0, 5), st.integers(0, 2000)),
          to_next_expiry=st.sampled_from([None, None, -1, 0]),
          sweep=st.sampled_from([False, False, False, True]))
    def advance(self, ms, to_next_expiry, sweep):
        """Moves the clock by `ms`, or to the next expiry (or 1 ms before it); then,
        if `sweep`, runs the expiry cycle on both sides until it finds nothing."""
        if to_next_expiry is not None:
            future = [e.expire_ms for b in self.model._buckets.values()
                      for e in b.entries.values() if e.expire_ms + to_next_expiry > self.now]
            ms = min(future) + to_next_expiry - self.now if future else 0
        self.now += ms
        for side in self.sides.values():
            side.set_time(self.now)
        if sweep:
            self.expire_everything()

    def expire_everything(self):
        # one pass over the stripes (a budget it cannot spend) finds every expired
        # entry: a stripe passed over unread had no expiry due (its bound, which
        # check() also verifies, is never after the earliest expiry it holds)
        self.store.expire_some(budget=60.0)
        self.model.expire_some()
        assert self.store.check() == []
        # every expired entry is gone on both sides: the stripes' counts of entries
        # with an expiry add up to the model's live keys with a TTL
        self.same("stats()['keys_with_ttl'] after expiry",
                  self.model.stats()["keys_with_ttl"], self.store.stats()["keys_with_ttl"])
        for bucket in BUCKETS:
            m, s = (self.handles[side][bucket].stats() for side in self.sides)
            self.same(f"{bucket}.stats()['keys'] after expiry", m["keys"], s["keys"])
            self.same(f"{bucket}.stats()['evictions']", 0, s["evictions"])

    # -- writes
    @rule(bv=bucket_values, key=keys, ttl=ttls, cond=conditions, single_read=st.booleans())
    def set(self, bv, key, ttl, cond, single_read):
        bucket, value = bv
        kwargs = dict(ttl=ttl, single_read=single_read)
        if cond in ("nx", "xx"):
            kwargs[cond] = True
        pair = self.version_pair(bucket, key, cond)
        m = outcome(self.handles["model"][bucket].set, key, value_of(value), **kwargs,
                    if_version=pair[0])
        s = outcome(self.handles["store"][bucket].set, key, value_of(value), **kwargs,
                    if_version=pair[1])
        what = f"{bucket}.set({key!r}, {value!r}, {kwargs}, if_version={pair})"
        if isinstance(m, Raised) or isinstance(s, Raised) or m is None or s is None:
            self.same(what, m, s)
        else:
            self.observe(bucket, key, m, s)

    def version_pair(self, bucket, key, cond):
        """The (model, store) versions that an if_version condition names: both None
        without one; else 0, the current, a superseded or a never-seen version."""
        seen = sorted(self.versions.get((bucket, as_key(key)), []))
        if cond == "if_superseded" and len(seen) < 2:
            cond = "if_never"
        if cond == "if_zero" or (cond == "if_current" and not seen):
            return (0, 0)
        if cond == "if_current":
            return seen[-1]
        if cond == "if_superseded":
            return seen[0]
        if cond == "if_never":
            return (1 << 60, 1 << 60)
        return (None, None)

    @rule(bucket=bucket_names, key=keys, cond=conditions)
    def delete_if_version(self, bucket, key, cond):
        """Compare-and-delete: only at the version named (0: absent)."""
        pair = self.version_pair(bucket, key, cond)
        if pair[0] is None:
            pair = (0, 0)
        m = outcome(self.handles["model"][bucket].delete, key, if_version=pair[0])
        s = outcome(self.handles["store"][bucket].delete, key, if_version=pair[1])
        self.same(f"{bucket}.delete({key!r}, if_version={pair})", m, s)

    @rule(bv=bucket_values, key=keys, ttl=ttls)
    def set_plainly(self, bv, key, ttl):
        """The common case, as a rule of its own so that buckets fill up."""
        self.set(bv, key, ttl, "plain", False)

    @rule(bucket_mapping=bucket_names.flatmap(lambda name: st.tuples(
        st.just(name), st.dictionaries(keys, values(name), max_size=4))), ttl=ttls)
    def mset(self, bucket_mapping, ttl):
        bucket, mapping = bucket_mapping
        mapping = {k: value_of(v) for k, v in mapping.items()}
        got = self.both(bucket, "mset", mapping, ttl=ttl)
        if got is not None:
            assert type(got[1]) is list and len(got[1]) == len(mapping), got
            for key, mv, sv in zip(mapping, *got):
                self.observe(bucket, key, mv, sv)

    @rule(bv=bucket_values, preset=st.booleans(), key=keys, by=amounts, initial=initials,
          ttl=ttls)
    def incr(self, bv, preset, key, by, initial, ttl):
        """incr, on the value left by earlier steps or (preset) on one set just before."""
        bucket, value = bv
        if preset:
            self.set_plainly(bv, key, None)
        self.compare(bucket, "incr", key, by=by, initial=initial, ttl=ttl)
        self.observe_version(bucket, key)

    @rule(bucket=bucket_names, names=st.lists(keys, min_size=1, max_size=3),
          getdel=st.booleans())
    def delete(self, bucket, names, getdel):
        if getdel:
            self.compare(bucket, "getdel", names[0])
        else:
            self.compare(bucket, "delete", *names)

    @rule(bucket=bucket_names, key=keys, ttl=valid_ttls)
    def expire(self, bucket, key, ttl):
        self.compare(bucket, "expire", key, ttl)

    @rule(bucket=bucket_names, key=keys)
    def persist(self, bucket, key):
        self.compare(bucket, "persist", key)

    @rule(bv=bucket_values, preset=st.booleans(), key=keys, bad_key=st.sampled_from(BAD_KEYS),
          ttl=bad_ttls,
          method=st.sampled_from(["set", "mset", "incr", "expire", "get", "mget", "delete",
                                  "exists", "getdel", "ttl", "version", "persist"]))
    def bad_arguments(self, bv, preset, key, bad_key, ttl, method):
        """A bad TTL (with a good key, present or not) or a bad key (after a good one,
        where a call takes several) is refused before anything else is done."""
        bucket, value = bv
        if preset:
            self.set(bv, key, None, "plain", single_read=True)
        args = {"set": (key, value_of(value), ttl), "mset": ({key: value_of(value)}, ttl),
                "incr": (key, 1, 0, ttl), "expire": (key, ttl), "mget": ([key, bad_key],),
                "delete": (key, bad_key), "exists": (key, bad_key)}
        self.compare(bucket, method, *args.get(method, (bad_key,)))

    # -- transactions
    @rule(bucket_ops=bucket_names.flatmap(lambda name: st.tuples(
        st.just(name), st.lists(txn_ops(name), min_size=1, max_size=8))),
        watch_key=keys, watch=conditions)
    def atomic(self, bucket_ops, watch_key, watch):
        """Several operations as one, under a watched version (0, the current, a
        superseded or a never-seen one) or none."""
        bucket, ops = bucket_ops
        pair = self.version_pair(bucket, watch_key, watch)
        got = {}
        for i, side in enumerate(self.sides):
            watched = None if pair[i] is None else {watch_key: pair[i]}
            got[side] = outcome(self.handles[side][bucket].atomic, ops, watched)
        m, s = got["model"], got["store"]
        what = f"{bucket}.atomic({ops!r}, watched {watch_key!r}: {pair})"
        if isinstance(m, Raised) or isinstance(s, Raised) or m is None or s is None:
            self.same(what, m, s)
            return
        assert type(s) is list and len(s) == len(m) == len(ops), (what, m, s)
        for op, mr, sr in zip(ops, m, s):
            name, key = op[0], op[1][0]
            if isinstance(mr, Exception) or isinstance(sr, Exception):
                self.same(f"{what}: {op!r}", Raised(mr) if isinstance(mr, Exception) else mr,
                          Raised(sr) if isinstance(sr, Exception) else sr)
            elif name == "version" or (name == "set" and not op[2].get("get") and mr is not None):
                self.observe(bucket, key, mr, sr)
            elif name == "ttl":
                assert (mr is None and sr is None) or (
                    type(sr) is float and mr is not None and abs(mr - sr) <= 0.001 + 1e-9), (
                    f"{what}: {op!r}: model {mr!r}, store {sr!r}")
            else:
                self.same(f"{what}: {op!r}", mr, sr)
        self.same(f"{bucket}.mget_consistent after {what}",
                  *(self.handles[side][bucket].mget_consistent(KEYS) for side in self.sides))

    # -- reads
    @rule(bucket=bucket_names, key=keys, with_default=st.booleans())
    def get(self, bucket, key, with_default):
        self.compare(bucket, "get", key, *([DEFAULT] if with_default else []))

    @rule(bucket=bucket_names, key=keys, consume=st.booleans())
    def get_entry(self, bucket, key, consume):
        """Value, version and TTL from one read; consume=False never takes a
        single-read key."""
        got = self.both(bucket, "get_entry", key, consume=consume)
        if got is None:
            return
        m, s = got
        assert (m is None) == (s is None), f"{bucket}.get_entry({key!r}): model {m!r}, store {s!r}"
        if m is None:
            return
        self.same(f"{bucket}.get_entry({key!r}) value", m[0], s[0])
        self.observe(bucket, key, m[1], s[1])
        assert (m[2] is None and s[2] is None) or (
            type(s[2]) is float and m[2] is not None and abs(m[2] - s[2]) <= 0.001 + 1e-9), (
            f"{bucket}.get_entry({key!r}) ttl: model {m[2]!r}, store {s[2]!r}")

    @rule(bucket=bucket_names, names=st.lists(keys, max_size=4))
    def mget(self, bucket, names):
        self.compare(bucket, "mget", names)

    @rule(bucket=bucket_names, names=st.lists(keys, min_size=1, max_size=3))
    def exists(self, bucket, names):
        self.compare(bucket, "exists", *names)

    @rule(bucket=bucket_names, key=keys)
    def ttl(self, bucket, key):
        got = self.both(bucket, "ttl", key)
        if got is not None:
            m, s = got
            assert (m is None and s is None) or (
                type(s) is float and m is not None and abs(m - s) <= 0.001 + 1e-9), (
                f"{bucket}.ttl({key!r}): model {m!r}, store {s!r}")

    @rule(bucket=bucket_names, key=keys)
    def version(self, bucket, key):
        self.observe_version(bucket, key)

    @rule(bucket=bucket_names, prefix=st.sampled_from(PREFIXES),
          count=st.sampled_from([1, 2, 3, 100]))
    def scan(self, bucket, prefix, count):
        found = {}
        for side, handles in self.handles.items():
            keys_seen, cursor = [], 0
            for _ in range(1000):
                got = outcome(handles[bucket].scan, prefix, cursor=cursor, count=count)
                if isinstance(got, Raised):
                    keys_seen = got
                    break
                cursor, page = got
                assert type(cursor) is int and all(type(k) is bytes for k in page), got
                keys_seen += page
                if cursor == 0:
                    keys_seen = set(keys_seen)
                    break
            else:
                raise AssertionError(f"{side}: scan({prefix!r}, count={count}) never ended")
            found[side] = keys_seen
        m, s = found["model"], found["store"]
        assert (type(m) is set and m == s) or same(m, s), (
            f"{bucket}.scan({prefix!r}, count={count}): model {m!r}, store {s!r}")

    @rule(bucket=bucket_names, prefix=st.sampled_from(PREFIXES),
          writes=st.lists(st.tuples(keys, st.booleans()), min_size=1, max_size=6))
    def scan_while_writing(self, bucket, prefix, writes):
        """A key present for the whole scan is returned at least once, however other
        keys come and go between its pages (one write, on both sides, per page)."""
        stable = set(self.handles["model"][bucket].scan(prefix, count=1000)[1])
        found = {side: [] for side in self.sides}
        cursors = {side: 0 for side in self.sides}
        done = set()
        for _ in range(1000):
            for side, handles in self.handles.items():
                if side not in done:
                    cursors[side], page = handles[bucket].scan(
                        prefix, cursor=cursors[side], count=1)
                    found[side] += page
                    if cursors[side] == 0:
                        done.add(side)
            if len(done) == len(self.sides):
                break
            if writes:
                key, put = writes.pop(0)
                if put:
                    self.set_plainly((bucket, VALUES[bucket][0][1]), key, None)
                else:
                    self.compare(bucket, "delete", key)
                    stable.discard(as_key(key))
        else:
            raise AssertionError(f"{bucket}.scan({prefix!r}, count=1) never ended")
        for side, got in found.items():
            assert stable <= set(got), (
                f"{side}: {bucket}.scan({prefix!r}) missed {stable - set(got)}")
            assert all(k.startswith(as_key(prefix)) for k in got), (side, got)

    # -- the store (Hypothesis favours rules with few arguments: these have several)
    # -- the index's growth (cext/table.pxi, GROWTH), which no result may show: the
    # next stripes in line split, moving keys to new stripes, between any two steps
    @rule(n=st.sampled_from([1, 1, 7, 64]))
    def grow(self, n):
        for _ in range(n):
            self.store.grow_index()

    @rule(bucket=bucket_names, action=st.sampled_from(["flush", "flush", "drop", "other"]),
          name=st.sampled_from(["raw", "", "has space", "x" * 65, "\u00e9", "ok-1.A_z"]),
          # "xml": a schema that does not exist ("json" does now; the model has none)
          schema=st.sampled_from(["bytes", "int", "xml"]))
    def buckets(self, bucket, action, name, schema):
        if action == "flush":
            self.compare(bucket, "flush")
        elif action == "drop":
            self.same(f"drop_bucket({bucket!r})",
                      *(outcome(s.drop_bucket, bucket) for s in self.sides.values()))
            self.same("buckets()", *(sorted(s.buckets()) for s in self.sides.values()))
            self._create(bucket)
        else:
            got = [outcome(s.create_bucket, name, schema=schema) for s in self.sides.values()]
            self.same(f"create_bucket({name!r}, schema={schema!r})",
                      *(g if isinstance(g, Raised) else "created" for g in got))
            self.same("buckets()", *(sorted(s.buckets()) for s in self.sides.values()))
            if name not in BUCKETS:
                self.same(f"drop_bucket({name!r})",
                          *(outcome(s.drop_bucket, name) for s in self.sides.values()))


# One failure at a time: shrinking several at once takes minutes.
StoreVersusModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                              deadline=None, report_multiple_bugs=False)
TestStoreVersusModel = StoreVersusModel.TestCase
