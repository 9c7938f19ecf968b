"""The dataset audit command: ``detvm audit MODEL --inputs DATA -o receipts.parquet``, one
receipt row per input item, on this machine or a Dask cluster (docs/audit.md)."""
from __future__ import annotations

import importlib.util
import sys
import time

from vm.errors import EnvironmentFault, TrapError

from .common import load_model


def add_commands(sub) -> None:
    a = sub.add_parser("audit", help="one receipt row per input item of a data set, to "
                                     "Parquet, here or on a Dask cluster")
    a.add_argument("model")
    a.add_argument("--inputs", required=True, metavar="DATA",
                   help="an .npz, a directory of NAME.npy (items along the first axis), or a "
                        "directory of one .npy per item (single-input model)")
    a.add_argument("-o", "--output", required=True, metavar="RECEIPTS.parquet",
                   help="the Parquet data set (a directory of part files)")
    a.add_argument("--engine", choices=["local", "dask"], default="local")
    a.add_argument("--scheduler", metavar="ADDRESS",
                   help="a Dask scheduler (tcp://host:8786); default: a LocalCluster")
    a.add_argument("--workers", type=int, default=2,
                   help="workers of the LocalCluster (default 2)")
    a.add_argument("--chunk", type=int, default=64, help="items per task (default 64)")
    a.add_argument("--resume", action="store_true", help="skip the rows already written")
    a.add_argument("--ctx", default="cpu", choices=["cpu", "reference", "gpu"])
    a.add_argument("--trace-level", choices=["root", "hashes"], default="root",
                   help="what each row's receipt keeps of the trace (default: its root)")
    a.set_defaults(func=cmd_audit)


def _needs(what: str):
    return EnvironmentFault(f"detvm audit needs {what}: pip install 'detvm[audit]'")


def cmd_audit(args) -> None:
    try:
        from tqdm import tqdm
    except ImportError:
        raise _needs("tqdm") from None
    if importlib.util.find_spec("pyarrow") is None:        # the Parquet writer, used later
        raise _needs("pyarrow")
    from vm.version import __version__

    from .audit_data import Source
    from .audit_run import Sink, audit_root, run_dask, run_local
    if args.chunk < 1:
        raise TrapError("--chunk must be at least 1")
    if args.scheduler and args.engine != "dask":
        raise TrapError("--scheduler needs --engine dask")
    model = load_model(args.model, args.ctx)
    source = Source(args.inputs, model)
    meta = {"model": model.hash, "executor": args.ctx, "level": args.trace_level,
            "detvm": __version__, **source.describe()}
    sink = Sink(args.output, meta, args.resume)
    chunks = ((start, arrays, source.names(start, start + len(next(iter(arrays.values())))))
              for start, arrays in source.chunks(args.chunk, sink.done))
    began, skipped = time.perf_counter(), sink.done
    with tqdm(total=source.count, initial=skipped, unit="item", file=sys.stderr,
              disable=None, desc="audit") as bar:
        if args.engine == "local":
            run_local(model.to_bytes(), args.ctx, chunks, args.trace_level, sink, bar.update)
        else:
            with _client(args) as client:
                workers = max(1, len(client.scheduler_info().get("workers", {})))
                run_dask(client, model.to_bytes(), args.ctx, chunks, args.trace_level, sink,
                         bar.update, 2 * workers + 1)
    sink.finish(source.count)
    seconds = time.perf_counter() - began
    rows, root = audit_root(args.output)
    done = rows - skipped
    print(f"{args.output}: {rows} rows ({done} new, {skipped} already written) in "
          f"{seconds:.1f} s ({done / seconds if seconds else 0:.1f} items/s); audit root {root}")


class _client:
    """A Dask client on ``--scheduler``, or on a LocalCluster closed on exit."""

    def __init__(self, args):
        self.args, self.cluster, self.client = args, None, None

    def __enter__(self):
        try:
            from distributed import Client
        except ImportError:
            raise _needs("dask and distributed") from None
        from .audit_run import local_cluster
        if self.args.scheduler:
            try:
                self.client = Client(self.args.scheduler, timeout="30s")
            except OSError as e:
                raise EnvironmentFault(f"cannot reach the Dask scheduler "
                                       f"{self.args.scheduler}: {e}") from None
        else:
            self.cluster, self.client = local_cluster(self.args.workers)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
