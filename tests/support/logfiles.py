"""Log files and data directories for the tests of bukt/writer's layers (the log format,
base files, the data directory, repair): records to write, files written and broken on
purpose, and the state a replay must end in."""
from bukt.writer import aof
from bukt.writer.aof import LogWriter, Record, Scan
from bukt.writer.datadir import DataDir, replay

B = "b"


def records(n, start=1, bucket=B):
    return [Record.set(start + i, bucket, b"k%d" % i, b"value-%d" % i, version=start + i)
            for i in range(n)]


def write_log(path, recs, seq=0):
    with LogWriter.create(path, seq) as w:
        w.append(recs)
        w.fsync()
    return path


def read_all(path, **kw):
    report = Scan(path)
    return list(aof.read_log(path, report=report, **kw)), report


def offsets(path, end=None):
    """Start offset of every record in a sound log (before `end`: a log with a prepared
    tail)."""
    data = open(path, "rb").read()[:end]
    out, off = [], aof.FILE_HEADER_SIZE
    while off < len(data):
        out.append(off)
        off += int.from_bytes(data[off + 4:off + 8], "little")
    return out


def flip(path, offset, bit):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def state(recs):
    """Applies records as the writer will: {bucket: {key: (value, expire_ms, version)}}."""
    s = {}
    for r in recs:
        b = s.setdefault(r.bucket, {})
        if r.type == aof.SET:
            b[r.key] = (r.value, r.expire_ms, r.version)
        elif r.type in (aof.DELETE, aof.EXPIRE, aof.EVICT):
            b.pop(r.key, None)
        elif r.type == aof.SET_TTL and r.key in b:
            b[r.key] = (b[r.key][0], r.expire_ms, b[r.key][2])
        elif r.type in (aof.FLUSH, aof.BUCKET_DROP):
            b.clear()
    return {k: v for k, v in s.items() if v}


def fresh(tmp_path, recs=()):
    """A data directory whose log holds `recs`; returns its path."""
    path = str(tmp_path / "data")
    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        with dd.open_log(rec) as w:
            if recs:
                w.append(recs)
            w.fsync()
    return path


def compacted(tmp_path, base_recs, log_recs, seq):
    """A data directory with a base covering `seq` and a log after it."""
    path = fresh(tmp_path, base_recs)
    with DataDir.open(path) as dd:
        rec = replay(dd)
        list(rec)
        with dd.open_log(rec) as w, dd.rotate(seq, w) as w2:
            w2.append(log_recs)
            w2.fsync()
            dd.install_base(base_recs, seq)
    return path
