"""`bukt replica status` and `bukt promote` (docs/operations.md, "Read replicas")."""
import json
import os
import time

from bukt.cli.common import FAILED, OK, REFUSED, config_arg, emit, json_arg, load_config


def replica_args(p):
    p.add_argument("action", choices=["status"], help="status: primary, applied "
                   "sequence, lag in sequence positions and seconds")
    config_arg(p)
    json_arg(p)


def replica(args):
    import bukt
    from bukt.replica.status import replica_status
    cfg = load_config(args)
    store = bukt.attach(cfg.instance, readonly=True)
    try:
        st = replica_status(store)
    finally:
        store.close()
    emit(args, st, lambda: print("\n".join(f"{k:16} {v}" for k, v in st.items())))
    return OK if st["role"] == "primary" or st["link"] == "up" else FAILED
