"""``druid-k8s-emulator serve``: run the Kubernetes API emulator in the foreground.

For trying DAGs or ``kubectl`` by hand without a cluster: the kubeconfig is written only once the server
answers, so a script may wait for the file to appear and then use it. SIGINT and SIGTERM stop it cleanly.

With ``--overlord`` a stand-in Druid Overlord (:class:`~druid_k8s_provider.testing.OverlordEmulator`) runs
beside it: ``--druid-version`` picks the version, ``--runner-property key=value`` (repeatable) adds runner
properties over the defaults, and ``--overlord-url-file`` receives the Overlord's base URL (one line), written
only once the Overlord answers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from druid_k8s_provider.config import RunnerConfig
from druid_k8s_provider.errors import DruidK8sConfigError
from druid_k8s_provider.testing.emulator import KubeEmulator
from druid_k8s_provider.testing.overlord.emulator import DEFAULT_DRUID_VERSION, OverlordEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="druid-k8s-emulator", description="In-process Kubernetes API emulator for druid-k8s-provider."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the Kubernetes API until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: an ephemeral port)")
    serve.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig for clients")
    serve.add_argument(
        "--no-cluster",
        action="store_true",
        help="serve the API only: no job controller, scheduler or kubelet (pods never run)",
    )
    serve.add_argument("--history-window", type=int, default=5000, help="watch events kept for resuming")
    serve.add_argument("--node-cpu", default="8", help="CPU capacity of the virtual node (default 8)")
    serve.add_argument("--node-memory", default="32Gi", help="memory of the virtual node (default 32Gi)")
    serve.add_argument("--overlord", action="store_true", help="also run a stand-in Druid Overlord")
    serve.add_argument(
        "--druid-version",
        default=DEFAULT_DRUID_VERSION,
        help=f"Druid version the Overlord plays (default {DEFAULT_DRUID_VERSION})",
    )
    serve.add_argument(
        "--runner-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Druid runner property for the Overlord, e.g. druid.indexer.runner.capacity=2 (repeatable)",
    )
    serve.add_argument("--overlord-url-file", help="where to write the Overlord's base URL (with --overlord)")
    serve.add_argument(
        "--start-delay", type=float, default=60.0, help="the Overlord's queue start delay in seconds"
    )
    return parser


def _runner_properties(pairs: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments as a mapping; ValueError naming the bad argument."""
    properties = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--runner-property {pair!r} is not KEY=VALUE")
        properties[key.strip()] = value
    return properties


async def _serve(arguments: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    emulator = KubeEmulator(
        host=arguments.host,
        port=arguments.port,
        kubeconfig_path=arguments.kubeconfig,
        cluster=not arguments.no_cluster,
        history_window=arguments.history_window,
        node_cpu=arguments.node_cpu,
        node_memory=arguments.node_memory,
    )
    async with emulator as kube:
        print(f"Kubernetes API emulator on {kube.url}; kubeconfig: {kube.kubeconfig_path}", flush=True)
        if not arguments.overlord:
            await stop.wait()
        else:
            overlord = OverlordEmulator(
                kube,
                druid_version=arguments.druid_version,
                runner_properties=_runner_properties(arguments.runner_property),
                start_delay=arguments.start_delay,
            )
            async with overlord:
                _write_line(Path(arguments.overlord_url_file), overlord.url)
                print(f"Druid Overlord emulator on {overlord.url}", flush=True)
                await stop.wait()
        print("stopping", flush=True)


def _write_line(path: Path, line: str) -> None:
    """Write the file whole at once, so a reader never sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(line + "\n")
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``druid-k8s-emulator`` console script."""
    arguments = _parser().parse_args(argv)
    if arguments.history_window < 1:
        print("druid-k8s-emulator: --history-window must be at least 1", file=sys.stderr)
        return 2
    if arguments.overlord and not arguments.overlord_url_file:
        print("druid-k8s-emulator: --overlord needs --overlord-url-file", file=sys.stderr)
        return 2
    try:
        properties = _runner_properties(arguments.runner_property)
        if arguments.overlord:
            RunnerConfig.from_properties({"druid.indexer.runner.namespace": "druid", **properties})
    except (ValueError, DruidK8sConfigError) as error:
        print(f"druid-k8s-emulator: {error}", file=sys.stderr)
        return 2
    asyncio.run(_serve(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
