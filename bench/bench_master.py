"""``videoanom master`` benchmark: poll time against Azurite, and upload-to-model latency.

1. Poll time. A private in-memory Azurite gets N locations (one tiny frame blob and a
   ``_READY`` blob each), and a temporary VIDEOANOM_HOME gets a "succeeded" pipeline record
   per location (what the master trusts to mean "a model is already registered"). Then
   ``Master.poll_once()`` is timed several times per N, with the HTTP requests each poll
   sends to the blob service counted at the SDK's HTTP transport; the same polls are timed
   on a local-folder datastore of the same shape for comparison.
2. Upload-to-model latency. ``videoanom master --watch`` runs as a subprocess on an empty
   container; one demo location is uploaded (``_READY`` last) and the time until both of
   its models are registered is measured, then the master is stopped with SIGTERM.

Each part replaces its own subsection of the "## Master" section of ``--output``.

Usage: python bench/bench_master.py [--sizes 100 1000 10000] [--polls 5] [--no-latency]
       [--no-poll] [--latency-timeout 2400] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # azurite_server, shared with the test fixture

from azurite_server import azurite_server  # noqa: E402

from ml_service.master.master import Master, MasterConfig  # noqa: E402
from ml_service.state import read_state, write_state  # noqa: E402
from ml_service.util.env_variables import Settings  # noqa: E402
from videoanom.data.blob import AzureBlobDatastore  # noqa: E402
from videoanom.names import classifier_model_name, prednet_model_name  # noqa: E402

logger = logging.getLogger("bench_master")

SECTION = "## Master"
POLL_HEADING = "### Poll time"
LATENCY_HEADING = "### Upload-to-model latency"
UPLOAD_THREADS = 16
FRAME = b"\x89PNG tiny"  # a few bytes: the master never reads a skipped location's files
INTERVAL = 5
QUIET_SECONDS = 60


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# ---------------------------------------------------------------------------- helpers


class RequestCounter:
    """Counts and times every request any blob client in this process sends.

    It wraps the SDK's HTTP transport (``RequestsTransport.send``), so it sees the
    datastore's requests and those of any other client the master opens (its blob-lease
    claims). Requests are keyed by method, ``comp`` query (``GET list`` = List Blobs) and
    container; ``waited`` is the time spent inside the transport (network and service), the
    rest of a call being the client's own work (building the request, parsing the XML).
    """

    def __init__(self, label: dict[str, str]) -> None:
        self.label = label  # container name -> how the table names it
        self.counts: Counter[str] = Counter()
        self.waited = 0.0
        self.lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[RequestCounter]:
        from azure.core.pipeline.transport import RequestsTransport

        original = RequestsTransport.send
        counter = self

        def send(transport, request, **kwargs):
            start = time.perf_counter()
            try:
                return original(transport, request, **kwargs)
            finally:
                counter.record(request.method, request.url, time.perf_counter() - start)

        RequestsTransport.send = send
        try:
            yield self
        finally:
            RequestsTransport.send = original

    def record(self, method: str, url: str, waited: float) -> None:
        parts = urlsplit(url)
        comp = parse_qs(parts.query).get("comp", [""])[0]
        container = [*parts.path.strip("/").split("/"), "", ""][1]
        where = self.label.get(container, container)
        key = " ".join(x for x in (method, comp, f"[{where}]" if where else "") if x)
        with self.lock:
            self.counts[key] += 1
            self.waited += waited

    def take(self) -> Counter[str]:
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def take_waited(self) -> float:
        with self.lock:
            waited, self.waited = self.waited, 0.0
        return waited


def blob_service(connection_string: str, threads: int = UPLOAD_THREADS):
    """A BlobServiceClient whose connection pool serves ``threads`` threads at once."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=threads)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return BlobServiceClient.from_connection_string(
        connection_string, transport=RequestsTransport(session=session, session_owner=False)
    )


def upload(container, items: list[tuple[str, bytes | Path]], threads: int = UPLOAD_THREADS):
    """Upload (name, bytes or file) pairs in parallel."""

    def put(item: tuple[str, bytes | Path]) -> None:
        name, data = item
        body = data.read_bytes() if isinstance(data, Path) else data
        container.upload_blob(name, body, overwrite=True)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, items))


def location_names(n: int) -> list[str]:
    return [f"loc-{i:05d}" for i in range(n)]


def write_records(home: Path, names: list[str]) -> None:
    """A "succeeded" pipeline record per location, as run_location writes after registering."""
    for name in names:
        write_state(
            home,
            name,
            "succeeded",
            attempts=0,
            prednet=f"models:/{prednet_model_name(name)}/1",
            classifier=f"models:/{classifier_model_name(name)}/1",
        )


def write_local_store(root: Path, names: list[str]) -> None:
    for name in names:
        clip = root / name / "train" / "clip"
        clip.mkdir(parents=True)
        (clip / "0001.png").write_bytes(FRAME)
        (root / name / "_READY").write_bytes(b"")


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# ---------------------------------------------------------------------------- poll time


@dataclass
class PollRow:
    datastore: str
    locations: int
    setup: str
    first: float
    polls: list[float]
    polls_quiet: list[float]
    listing: list[float]
    listing_wait: list[float]
    records: list[float]
    requests: str = "-"
    decisions: str = ""
    log_lines: int = 0


def summarise(decisions) -> str:
    kinds = Counter(f"{d.action} ({d.reason})" for d in decisions)
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common())


def time_polls(
    master: Master, polls: int, n: int, log_path: Path, counter: RequestCounter | None = None
) -> PollRow:
    """First poll, ``polls`` polls with INFO logging to a file, ``polls`` without logging.

    With a ``counter``, also checks that every poll sends the same requests and records
    them in ``requests``.
    """
    counter = counter or RequestCounter({})
    master_logger = logging.getLogger("ml_service.master.master")
    master_logger.setLevel(logging.NOTSET)
    counter.take()
    first, decisions = timed(master.poll_once)
    per_poll = counter.take()
    assert len(decisions) == n, (len(decisions), n)
    assert all(d.action == "skip" and d.reason == "already trained" for d in decisions), summarise(
        decisions
    )
    lines_before = count_lines(log_path)
    times = [timed(master.poll_once)[0] for _ in range(polls)]
    log_lines = (count_lines(log_path) - lines_before) // polls
    master_logger.setLevel(logging.WARNING)
    quiet = [timed(master.poll_once)[0] for _ in range(polls)]
    master_logger.setLevel(logging.NOTSET)
    later = counter.take()
    assert later == Counter({k: 2 * polls * v for k, v in per_poll.items()}), (per_poll, later)
    listing, listing_wait = [], []
    for _ in range(polls):
        counter.take_waited()
        listing.append(timed(master.datastore.list_locations)[0])
        listing_wait.append(counter.take_waited())
    names = [d.location for d in decisions]
    home = master.settings.home
    records = [timed(lambda: [read_state(home, x) for x in names])[0] for _ in range(polls)]
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(per_poll.items()))
    return PollRow(
        datastore="",
        locations=n,
        setup="",
        first=first,
        polls=times,
        polls_quiet=quiet,
        listing=listing,
        listing_wait=listing_wait if per_poll else [],
        records=records,
        requests=f"{sum(per_poll.values())} ({kinds})" if per_poll else "-",
        decisions=summarise(decisions),
        log_lines=log_lines,
    )


def poll_part(sizes: list[int], polls: int, work: Path) -> tuple[list[PollRow], dict[str, str]]:
    log_path = work / "master-poll.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)
    rows: list[PollRow] = []
    info = {"before": load()}
    with azurite_server(work / "azurite") as server:
        # The master's blob-lease claims read the connection string from the environment.
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
        service = blob_service(server.connection_string)
        for n in sizes:
            names = location_names(n)
            home = work / f"home-{n}"
            container = service.get_container_client(f"bench-master-{n}")
            container.create_container()
            items = [(f"{name}/train/clip/0001.png", FRAME) for name in names]
            items += [(f"{name}/_READY", b"") for name in names]
            upload_s, _ = timed(lambda c=container, i=items: upload(c, i))
            records_s, _ = timed(lambda h=home, ns=names: write_records(h, ns))
            logger.info(
                "%d locations: uploaded %d blobs in %.1f s (%.0f/s), records in %.1f s",
                n,
                len(items),
                upload_s,
                len(items) / upload_s,
                records_s,
            )

            settings = Settings.load(
                {"home": str(home), "datastore": f"azureblob://{container.container_name}"},
                env_file=None,
                environ={},
            )
            store = AzureBlobDatastore(
                settings.datastore,
                connection_string=server.connection_string,
                cache_dir=home / "cache" / "blob",
            )
            master = Master(settings, MasterConfig(), datastore=store)
            labels = {container.container_name: "", settings.claims_container: "claims"}
            with RequestCounter(labels).installed() as counter:
                row = time_polls(master, polls, n, log_path, counter)
            row.datastore = "Azurite"
            row.setup = f"upload {upload_s:.1f} s ({len(items) / upload_s:.0f} blobs/s), "
            row.setup += f"records {records_s:.1f} s"
            rows.append(row)
            logger.info("%s", brief(row))

            local_root = work / f"local-{n}"
            local_s, _ = timed(lambda r=local_root, ns=names: write_local_store(r, ns))
            local_settings = Settings.load(
                {"home": str(home), "datastore": str(local_root)}, env_file=None, environ={}
            )
            local = time_polls(Master(local_settings, MasterConfig()), polls, n, log_path)
            local.datastore = "local folder"
            local.setup = f"folders {local_s:.1f} s, same records"
            rows.append(local)
            logger.info("%s", brief(local))
            container.delete_container()
            shutil.rmtree(local_root)
            shutil.rmtree(home)
    os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
    root_logger.removeHandler(handler)
    info["after"] = load()
    return rows, info


def brief(r: PollRow) -> str:
    med = statistics.median
    return (
        f"{r.datastore} {r.locations}: poll {med(r.polls):.3f} s, quiet {med(r.polls_quiet):.3f}"
        f" s, listing {med(r.listing):.3f} s{waited(r)}, records {med(r.records):.3f} s, "
        f"{r.requests}"
    )


def waited(r: PollRow) -> str:
    if not r.listing_wait:
        return ""
    return f" ({statistics.median(r.listing_wait):.3f} waiting for Azurite)"


def poll_table(rows: list[PollRow]) -> str:
    lines = [
        "| datastore | locations | set-up | first poll | poll, median (min) "
        "| poll without logging, median (min) | `list_locations` alone, median "
        "| `read_state` x locations alone, median | HTTP requests per poll "
        "| log lines per poll | decisions |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.datastore} | {r.locations:,} | {r.setup} | {r.first:.3f} s "
            f"| {statistics.median(r.polls):.3f} s ({min(r.polls):.3f}) "
            f"| {statistics.median(r.polls_quiet):.3f} s ({min(r.polls_quiet):.3f}) "
            f"| {statistics.median(r.listing):.3f} s{waited(r)} "
            f"| {statistics.median(r.records):.3f} s "
            f"| {r.requests} | {r.log_lines:,} "
            f"| {r.decisions} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- latency


@dataclass
class Latency:
    location: str = ""
    files: int = 0
    megabytes: float = 0.0
    upload_s: float = 0.0
    running_s: float | None = None
    log_pickup_s: float | None = None
    succeeded_s: float | None = None
    registered_s: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    steps: dict[str, dict] = field(default_factory=dict)
    stop_s: float | None = None
    returncode: int | None = None
    error: str = ""
    log_tail: str = ""
    info: dict[str, str] = field(default_factory=dict)


def master_environment(home: Path, connection_string: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIDEOANOM_", "MLFLOW_", "AZURE_STORAGE_"))
    }
    env.update(
        AZURE_STORAGE_CONNECTION_STRING=connection_string,
        VIDEOANOM_HOME=str(home),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def log_time(line: str) -> float:
    stamp = line.split(" INFO ", 1)[0].strip()
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def latency_part(work: Path, timeout: float, seed: int) -> Latency:
    from ml_service.demo import DEMO_DEFAULTS
    from videoanom.data.demo import write_demo_datastore

    result = Latency()
    result.info["load before"] = load()
    home, store = work / "latency-home", work / "latency-store"
    (location,) = write_demo_datastore(store, locations=1, seed=seed, progress=False)
    files = sorted(p for p in (store / location).rglob("*") if p.is_file())
    result.location, result.files = location, len(files) + 1
    result.megabytes = sum(p.stat().st_size for p in files) / 1e6

    with azurite_server(work / "azurite-latency") as server:
        service = blob_service(server.connection_string)
        container = service.get_container_client("bench-latency")
        container.create_container()
        command = [
            sys.executable,
            "-m",
            "videoanom",
            "master",
            "--watch",
            "--interval",
            str(INTERVAL),
            "--datastore",
            f"azureblob://{container.container_name}",
            "--trials",
            str(DEMO_DEFAULTS["trials"]),
            "--max-epochs",
            str(DEMO_DEFAULTS["max_epochs"]),
            "--quiet-seconds",
            str(QUIET_SECONDS),
        ]
        result.info["command"] = " ".join(["videoanom", *command[3:]])
        log_path = work / "master-watch.log"
        with open(log_path, "wb") as log:
            master = subprocess.Popen(
                command,
                cwd=work,
                env=master_environment(home, server.connection_string),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _watch(master, container, store, location, files, home, log_path, timeout, result)
        finally:
            if master.poll() is None:
                master.kill()
                master.wait()
            result.log_tail = log_path.read_text(errors="replace")[-4000:]
    result.info["load after"] = load()
    return result


def _watch(master, container, store, location, files, home, log_path, timeout, result) -> None:
    deadline = time.monotonic() + timeout
    # Wait for the master's first poll (its "watching" line), so start-up is not counted.
    while "watching" not in log_path.read_text(errors="replace"):
        if master.poll() is not None or time.monotonic() > deadline:
            result.error = f"the master did not start (exit {master.poll()})"
            return
        time.sleep(0.5)
    time.sleep(1)

    upload_wall = time.time()
    start = time.monotonic()
    upload(
        container, [(f"{location}/{p.relative_to(store / location).as_posix()}", p) for p in files]
    )
    container.upload_blob(f"{location}/_READY", b"", overwrite=True)
    result.upload_s = time.monotonic() - start
    logger.info("uploaded %d files in %.1f s", result.files, result.upload_s)

    while True:
        state = read_state(home, location).get("state")
        elapsed = time.monotonic() - start
        if state == "running" and result.running_s is None:
            result.running_s = elapsed
            logger.info("picked up after %.1f s", elapsed)
        if state == "succeeded":
            result.succeeded_s = elapsed
            result.running_s = result.running_s if result.running_s is not None else elapsed
            break
        if state == "failed" or master.poll() is not None or time.monotonic() > deadline:
            why = (
                f"pipeline failed: {read_state(home, location).get('reason')}"
                if state == "failed"
                else f"master exited with {master.poll()}"
                if master.poll() is not None
                else f"no model within {int(time.monotonic() - start)} s of the upload"
            )
            result.error = why
            return
        time.sleep(0.5)
    logger.info("succeeded after %.0f s", result.succeeded_s)

    record = read_state(home, location)
    result.steps = record.get("steps", {})
    for line in log_path.read_text(errors="replace").splitlines():
        if re.search(rf"ml_service\.master\.master: {re.escape(location)}: training", line):
            result.log_pickup_s = log_time(line) - upload_wall
            break

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(home / 'mlflow.db').resolve()}")
    created = []
    for name in (prednet_model_name(location), classifier_model_name(location)):
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            result.error = f"state says succeeded but {name} has no registered version"
            return
        latest = max(versions, key=lambda v: int(v.version))
        result.versions[name] = latest.version
        created.append(latest.creation_timestamp / 1000)
    result.registered_s = max(created) - upload_wall

    # Stop it: SIGTERM ends --watch after the current poll (or at once while it waits).
    stop = time.monotonic()
    master.send_signal(signal.SIGTERM)
    try:
        result.returncode = master.wait(timeout=INTERVAL + 15)
        result.stop_s = time.monotonic() - stop
    except subprocess.TimeoutExpired:
        result.error = f"the master did not exit within {INTERVAL + 15} s of SIGTERM"


def latency_table(r: Latency) -> str:
    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| demo location `{r.location}`: files uploaded (with `_READY`) | "
        f"{r.files:,} ({r.megabytes:.1f} MB) |",
        f"| upload, {UPLOAD_THREADS} threads, `_READY` last | {secs(r.upload_s)} |",
        f"| upload start -> master picks it up (its `training` log line) "
        f"| {secs(r.log_pickup_s)} |",
        f"| upload start -> state record `running` | {secs(r.running_s)} |",
    ]
    for name, step in r.steps.items():
        reused = " (reused)" if step.get("reused") else ""
        rows.append(f"| step `{name}`{reused} | {step.get('seconds', 0):.1f} s |")
    versions = ", ".join(f"`{n}` v{v}" for n, v in r.versions.items())
    rows += [
        f"| upload start -> both models registered ({versions}; registry creation times) "
        f"| **{secs(r.registered_s)}** |",
        f"| upload start -> state record `succeeded` | {secs(r.succeeded_s)} |",
        f"| SIGTERM -> master exited (exit status {r.returncode}) | {secs(r.stop_s)} |",
    ]
    return "\n".join(rows)


# ---------------------------------------------------------------------------- report


def machine_lines(extra: dict[str, str]) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    import azure.storage.blob
    from bench_prednet import machine_info  # the machine description of the other benches

    info = {k: v for k, v in machine_info().items() if k not in ("TensorFlow", "Keras")}
    info["azure-storage-blob"] = azure.storage.blob.__version__
    package = ROOT / "node_modules" / "azurite" / "package.json"
    info["Azurite"] = json.loads(package.read_text())["version"] if package.exists() else "?"
    node = shutil.which("node")
    if node:
        info["Node.js"] = subprocess.run([node, "--version"], capture_output=True, text=True)
        info["Node.js"] = info["Node.js"].stdout.strip()
    info.update({f"load average (1/5/15 min) {k}": v for k, v in extra.items()})
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def para(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), 95)


def render_poll(rows: list[PollRow], info: dict[str, str], command: str, polls: int) -> str:
    azure = {r.locations: r for r in rows if r.datastore == "Azurite"}
    local = {r.locations: r for r in rows if r.datastore != "Azurite"}
    largest = max(azure)
    big, big_local = azure[largest], local[largest]
    med = statistics.median
    poll, quiet = med(big.polls), med(big.polls_quiet)
    listing, records = med(big.listing), med(big.records)
    requests = ", ".join(f"{r.requests.split(' ')[0]} at {n:,}" for n, r in azure.items())
    wait = med(big.listing_wait)

    def sec(x: float) -> str:
        return f"{x:.2f} s" if x >= 0.1 else f"{x:.3f} s"

    where = f"""At {largest:,} locations a poll takes {sec(poll)}: `list_locations`
    {sec(listing)} ({100 * listing / poll:.0f}%; of that, {sec(wait)} waiting for Azurite
    and {sec(listing - wait)} in this process, the blob SDK parsing the XML and the location
    names being checked), reading the {largest:,} `state.json` records {sec(records)}
    ({100 * records / poll:.0f}%), and writing one INFO line per skipped location about
    {sec(max(poll - quiet, 0))} (the poll takes {sec(quiet)} with the master's logger at
    WARNING). The records and the log lines grow with the locations as the listing does,
    but send no request: the same poll on a local folder takes
    {sec(med(big_local.polls))}, its folder listing {sec(med(big_local.listing))}."""
    rates = [f"{r.setup.split('(')[1].split(' ')[0]} for {2 * n:,}" for n, r in azure.items()]
    setup = f"""Set-up runs at Azurite's pace, in blobs per second averaged over each upload:
    {", ".join(rates[:-1])}{" and " if len(rates) > 1 else ""}{rates[-1]} blobs."""
    measured = f"""How it was measured: Azurite runs in memory on this machine; every location
    holds two blobs (`loc-NNNNN/train/clip/0001.png`, {len(FRAME)} bytes, and
    `loc-NNNNN/_READY`), uploaded from {UPLOAD_THREADS} threads. "One model each already
    registered" is set up the way the master sees it: it trusts its pipeline records, so
    every location gets a `succeeded` record in
    `<VIDEOANOM_HOME>/locations/<slug>/state.json` (`ml_service.state.write_state`, as
    `run_location` writes after registering both models), and for such a location the
    master asks neither the MLflow registry (it reads that only when some location has no
    record) nor the datastore for its files: every decision is "skip (already trained)".
    Per row: one `Master(settings, MasterConfig()).poll_once()` ("first poll"), then
    {polls} polls with the master's INFO log going to a file (as `videoanom master` logs
    it, to stderr there), then {polls} polls with the master's logger at WARNING, then
    {polls} calls each of the
    datastore's `list_locations` alone and of `read_state` for every location alone. HTTP
    requests are counted per poll at the blob SDK's transport (`RequestsTransport.send`), so
    every blob client in the process is included, the datastore's and the master's
    blob-lease claims' (method and `comp` query; `GET list` is one List Blobs call; "waiting
    for Azurite" is the time inside the transport). The local-folder rows use the same
    home and records with a folder datastore of the same shape."""
    shows = f"""What it shows: a poll lists the container once with delimiter `/`, which
    returns at most 5,000 location prefixes per request, so it costs one request per 5,000
    locations ({requests}), never one per blob, and no request per trained location. {where}
    Timings are on shared CPUs (load above): compare rows of one run. {setup}"""
    return f"""{POLL_HEADING}

Command: `{command}`

Machine:

{machine_lines(info)}

{poll_table(rows)}

{para(measured)}

{para(shows)}
"""


def render_latency(r: Latency, command: str, seed: int) -> str:
    body = latency_table(r)
    if r.error:
        body += f"\n\n**The run did not finish:** {r.error}. Last lines of the master's log:\n\n"
        body += "```\n" + r.log_tail.strip()[-3000:] + "\n```"
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    setup = f"""A fresh VIDEOANOM_HOME (MLflow: the default SQLite database under it) and an
    empty container in a fresh in-memory Azurite; the master runs as
    `{r.info.get("command", "videoanom master --watch ...")}` (the demo training budget,
    `DEMO_DEFAULTS` of `ml_service/demo.py`), with AZURE_STORAGE_CONNECTION_STRING and
    VIDEOANOM_HOME set and MLFLOW_TRACKING_URI unset. Once it has logged that it is
    watching, one demo location (`write_demo_datastore`, 1 location, seed {seed}, default
    size) is uploaded file by file with `_READY` last. Times count from the start of the
    upload; "registered" is the later of the two model versions' registry creation times,
    "picks it up" the time stamp of the master's `<location>: training` log line, and the
    state record is read every 0.5 s."""
    if r.error or r.registered_s is None:
        reading = f"""The run stopped before both models were registered: {r.error}."""
    else:
        steps = sum(float(step.get("seconds", 0)) for step in r.steps.values())
        train = float(r.steps.get("train", {}).get("seconds", 0))
        reading = f"""How to read it: with the `_READY` marker the master starts at its next
        poll (every {INTERVAL} s), {r.log_pickup_s or r.running_s:.0f} s after the upload
        began; without one it would wait out the {QUIET_SECONDS} s quiet period after the
        last file. From there the latency is the pipeline: its steps take {steps:.0f} s of
        the {r.registered_s:.0f} s, the PredNet search (`train`, {train:.0f} s) alone
        {100 * train / r.registered_s:.0f}%, on this machine's CPUs. The upload and the
        master's polling add seconds, not minutes. SIGTERM stopped the idle master at once
        (exit status {r.returncode}); it is only checked between polls, and a poll includes
        the training it starts, so during training the master exits after that pipeline."""
    return f"""{LATENCY_HEADING}

Command: `{command}`

Date {date} UTC, same machine; load average (1/5/15 min) before {r.info.get("load before")},
after {r.info.get("load after")}.

{para(setup)}

{body}

{para(reading)}
"""


def replace_section(path: Path, poll: str | None, latency: str | None) -> None:
    """Write the "## Master" section of ``path``, keeping a subsection this run did not redo."""
    text = path.read_text() if path.exists() else ""
    start = text.find(f"\n{SECTION}\n")
    old = ""
    if start >= 0:
        end = text.find("\n## ", start + 1)
        end = len(text) if end < 0 else end
        old, text = text[start:end], text[:start].rstrip("\n") + "\n" + text[end:]

    def keep(heading: str) -> str:
        at = old.find(heading)
        if at < 0:
            return ""
        nxt = old.find("\n### ", at + 1)
        return old[at : nxt if nxt >= 0 else len(old)].strip() + "\n"

    poll = poll if poll is not None else keep(POLL_HEADING)
    latency = latency if latency is not None else keep(LATENCY_HEADING)
    intro = """What one `videoanom master` poll costs as a datastore grows, and how long an
    uploaded location waits for its models. Generated by `bench/bench_master.py` (`make
    bench`); each subsection records the command that last produced it."""
    parts = [SECTION, "", para(intro), ""]
    parts += [p.strip() + "\n" for p in (poll, latency) if p]
    section = "\n".join(parts)
    text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.write_text(text.lstrip("\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--polls", type=int, default=5, help="timed polls per size and mode")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency part")
    parser.add_argument("--no-poll", action="store_true", help="skip the poll-time part")
    parser.add_argument("--seed", type=int, default=5, help="demo data seed (latency part)")
    parser.add_argument(
        "--latency-timeout", type=float, default=2400, help="seconds before the latency part fails"
    )
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # machine_info imports TensorFlow
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(console)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger gets the master's log file only

    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["python bench/bench_master.py", *argv])
    work = Path(tempfile.mkdtemp(prefix="videoanom-bench-master-"))
    poll_doc = latency_doc = None
    failed = False
    try:
        if not args.no_poll:
            rows, info = poll_part(args.sizes, args.polls, work)
            print(poll_table(rows))
            poll_doc = render_poll(rows, info, command, args.polls)
        if not args.no_latency:
            result = latency_part(work, args.latency_timeout, args.seed)
            print(latency_table(result))
            if result.error:
                failed = True
                print(f"latency run failed: {result.error}\n{result.log_tail}", file=sys.stderr)
            latency_doc = render_latency(result, command, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.output:
        replace_section(args.output, poll_doc, latency_doc)
        logger.info("wrote the %s section of %s", SECTION, args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
