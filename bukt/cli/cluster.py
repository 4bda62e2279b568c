"""`bukt cluster`: one bucket spread over several Bukt nodes behind twemproxy.

    bukt cluster config --listen HOST:PORT --node NAME=HOST:PORT ... [--bucket B]
                        --token-file F [-o FILE] [--check]
        the nutcracker pool (bukt/cluster/twemproxy.py says what it sets and why)
    bukt cluster locate --node NAME=HOST:PORT ... KEY ...
        which node each key lives on (ketama, as nutcracker computes it)

The token is one token of the bucket registered on every node (`bukt buckets create B
--token-file F` on each, or `bukt tokens create -b B --token-file F`): this command
reads it from a file or stdin, never from its command line. docs/scale-out.md.
"""
import os

from bukt.cli.common import FAILED, OK, REFUSED, CliError, config_arg, emit, json_arg
from bukt.cluster import twemproxy as tp
from bukt.cluster.ketama import Continuum
from bukt.tokens import read_given


def _nodes_arg(p):
    p.add_argument("--node", action="append", default=[], metavar="NAME=HOST:PORT",
                   dest="nodes", required=True,
                   help="a node: its name on the ring (keep it when the node moves) and "
                        "its resp.bind; once per node, in a stable order")


def cluster_args(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    c = sub.add_parser("config", help="write the twemproxy (nutcracker) pool for the nodes")
    config_arg(c)
    c.add_argument("--listen", default=tp.DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where the proxy listens for clients (default {tp.DEFAULT_LISTEN})")
    _nodes_arg(c)
    c.add_argument("-b", "--bucket",
                   help="the bucket spread over the nodes: the pool's name, and --check "
                        "AUTHs as it (default: pool \"bukt\", the token names the bucket)")
    c.add_argument("--token-file", required=True, metavar="PATH",
                   help="a token of the bucket, registered on every node: the first line "
                        "of PATH, or of stdin for - (the proxy's redis_auth)")
    c.add_argument("-o", "--output", metavar="FILE",
                   help="write the YAML here (mode 0600: it holds the token); default stdout")
    c.add_argument("--hash", choices=tp.HASH_CHOICES, default="md5",
                   help="the key hash (default md5, as libketama; not fnv1a_64, which "
                        "piles keys that differ at the end onto one node)")
    c.add_argument("--hash-tag", metavar="XY",
                   help="hash only the part of a key between X and Y, e.g. {} (keys "
                        "sharing it share a node)")
    c.add_argument("--timeout-ms", type=int, default=0, metavar="MS",
                   help="the proxy's wait for a node's answer (default: limits.ring_wait_ms "
                        f"of --config + {tp.TIMEOUT_MARGIN_MS})")
    c.add_argument("--no-eject", action="store_true",
                   help="keep a failing node on the ring: its keys fail instead of moving "
                        "to the others (auto_eject_hosts: false)")
    c.add_argument("--retry-ms", type=int, default=tp.SERVER_RETRY_TIMEOUT_MS, metavar="MS",
                   help="an ejected node is tried again after MS "
                        f"(default {tp.SERVER_RETRY_TIMEOUT_MS})")
    c.add_argument("--failure-limit", type=int, default=tp.SERVER_FAILURE_LIMIT, metavar="N",
                   help=f"failures in a row that eject a node (default "
                        f"{tp.SERVER_FAILURE_LIMIT})")
    c.add_argument("--server-connections", type=int, default=1, metavar="N",
                   help="connections from the proxy to each node (default 1: a client's "
                        "pipelined requests to a node stay in order; more spread a node's "
                        "load over its TCP workers but may reorder them)")
    c.add_argument("--check", action="store_true",
                   help="first AUTH to every node with the token and bucket; refuse to "
                        "write if one does not accept it")
    json_arg(c)
    loc = sub.add_parser("locate", help="the node of each key (ketama, as nutcracker)")
    _nodes_arg(loc)
    loc.add_argument("--hash", choices=tp.HASH_CHOICES, default="md5")
    loc.add_argument("--hash-tag", metavar="XY")
    loc.add_argument("keys", nargs="+", metavar="KEY")
    json_arg(loc)


def _parse_nodes(args):
    try:
        return [tp.parse_node(n) for n in args.nodes]
    except ValueError as e:
        raise CliError(REFUSED, str(e)) from None


def cluster(args):
    return _config(args) if args.action == "config" else _locate(args)


def _config(args):
    nodes = _parse_nodes(args)
    try:
        token = read_given(args.token_file)
    except ValueError as e:
        raise CliError(REFUSED, f"--token-file {args.token_file}: {e}") from None
    timeout = args.timeout_ms
    if timeout <= 0:
        cfg = None
        if args.config or os.environ.get("BUKT_CONFIG"):
            from bukt import config
            cfg = config.load(args.config)
        timeout = tp.default_timeout_ms(cfg)
    try:
        pool = tp.Pool(args.bucket or tp.DEFAULT_POOL, args.listen, nodes, token,
                       hash=args.hash, hash_tag=args.hash_tag, timeout_ms=timeout,
                       eject=not args.no_eject, retry_ms=args.retry_ms, failure_limit=args.failure_limit,
                       server_connections=args.server_connections)
    except ValueError as e:
        raise CliError(REFUSED, str(e)) from None
    if args.check:
        problems = [(n.name, tp.check_node(n, token, args.bucket)) for n in nodes]
        problems = [(name, why) for name, why in problems if why]
        if problems:
            raise CliError(FAILED, "; ".join(f"node {name}: {why}" for name, why in problems)
                           + " (register the token on it: bukt tokens create -b "
                           f"{args.bucket or 'BUCKET'} --token-file F)")
    text = pool.yaml()
    if args.output:
        tp.write_private(args.output, text)
        shares = pool.continuum().shares()
        emit(args, {"output": args.output, "pool": pool.name, "listen": pool.listen,
                    "shares": shares},
             f"wrote {args.output}: pool {pool.name} on {pool.listen} over "
             f"{len(nodes)} nodes; run: nutcracker -c {args.output}")
    else:
        print(text, end="")
    return OK


def _locate(args):
    nodes = _parse_nodes(args)
    if args.hash_tag is not None and len(args.hash_tag) != 2:
        raise CliError(REFUSED, f"--hash-tag {args.hash_tag!r}: two characters, e.g. {{}}")
    ring = Continuum([n.name for n in nodes])
    where = {k: ring.server(os.fsencode(k), args.hash, args.hash_tag) for k in args.keys}
    emit(args, where, "\n".join(f"{k}\t{n}" for k, n in where.items()))
    return OK


__all__ = ["cluster_args", "cluster"]
