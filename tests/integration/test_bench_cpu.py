"""``python -m bench.scale cpu``: the client CPU the model takes is regcleaner's own S3
reads', over plain HTTP and over TLS with a registry's keys (a CA of the bench's own,
trusted by AWS_CA_BUNDLE), never botocore's by a silent fallback."""

from __future__ import annotations

import os

import pytest

from bench.scale import measure_cpu


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_cpu_bench_measures_regcleaners_own_reads(tls: bool) -> None:
    before = os.environ.get("AWS_CA_BUNDLE")
    figures = measure_cpu(60, tls=tls, registry_keys=tls)
    assert set(figures) == {"get_ms", "head_ms", "list_page_ms"}
    assert all(value > 0 for value in figures.values())
    assert os.environ.get("AWS_CA_BUNDLE") == before  # put back as it was


@pytest.mark.parametrize("how", ["never built", "a page declined"])
def test_the_cpu_bench_refuses_to_report_botocores_figures_as_its_own(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Were regcleaner's own reads off (never built, as for an S3 they cannot serve) or
    did they hand a request to botocore (a page they decline), the figures would be
    botocore's, in whole or in part: the bench stops instead of printing them."""
    from regcleaner.storage import s3fast

    async def not_built(*args: object, **kwargs: object) -> None:
        return None

    async def declined(*args: object, **kwargs: object) -> None:
        raise s3fast.NotServed("declined")

    if how == "never built":
        monkeypatch.setattr(s3fast.FastReads, "build", not_built)
    else:
        monkeypatch.setattr(s3fast.FastReads, "page", declined)
    with pytest.raises(SystemExit, match="botocore"):
        measure_cpu(60)
