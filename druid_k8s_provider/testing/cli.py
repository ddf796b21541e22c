"""``druid-k8s-emulator serve``: run the Kubernetes API emulator in the foreground.

For trying DAGs or ``kubectl`` by hand without a cluster: the kubeconfig is written only once the server
answers, so a script may wait for the file to appear and then use it. SIGINT and SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from druid_k8s_provider.testing.emulator import KubeEmulator


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
    return parser


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
        await stop.wait()
        print("stopping", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``druid-k8s-emulator`` console script."""
    arguments = _parser().parse_args(argv)
    if arguments.history_window < 1:
        print("druid-k8s-emulator: --history-window must be at least 1", file=sys.stderr)
        return 2
    asyncio.run(_serve(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
