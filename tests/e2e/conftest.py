"""The kind cluster, once per session: created (or reused), the two images built and loaded, fake GPUs on
the workers, the chart installed. Deleted at the end unless KEEP_CLUSTER=1; when anything failed, kind's
logs and the objects' state go to E2E_LOGS_DIR first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import cluster
from tests.e2e.cluster import Kube


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    kubeconfig: Path = tmp_path_factory.mktemp("kind") / "kubeconfig"
    created = False
    setup_failed = False
    client = Kube(kubeconfig)
    try:
        created = cluster.create_cluster(kubeconfig)
        cluster.build_and_load_images()
        cluster.fake_gpus(client)
        cluster.install_chart(client)
        yield client
    except BaseException:
        setup_failed = True
        raise
    finally:
        if setup_failed or request.session.testsfailed:
            logs = cluster.export_logs()
            if kubeconfig.exists():
                (logs / "objects.txt").write_text(cluster.describe_everything(client))
            print(f"\nkind e2e: logs and objects in {logs}")
        if cluster.KEEP_CLUSTER:
            print(
                f"\nkind e2e: cluster {cluster.CLUSTER} kept (KEEP_CLUSTER=1); kind delete cluster --name "
                f"{cluster.CLUSTER} removes it"
            )
        elif created or cluster.cluster_exists():
            cluster.delete_cluster(kubeconfig)
