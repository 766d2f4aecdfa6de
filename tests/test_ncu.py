"""helpers.kernels.ncu: Nsight Compute's CSV read back and turned into the simulator's quantities. No GPU here: a
fake `ncu` on PATH prints CSV in ncu's format (one row per launch and metric), so `measure()` runs end to end."""
import stat
import textwrap

import pytest

from helpers.kernels import ncu

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
          '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')


def csv_rows(launches):
    """ncu --csv text for [(kernel, {metric: value})], values with thousands separators as ncu prints them."""
    lines = ["==PROF== Connected to process 123 (python3)", "==PROF== Profiling \"copy_coalesced\": 0%....100%", HEADER]
    for i, (kernel, metrics) in enumerate(launches):
        for name, value in metrics.items():
            lines.append(f'"{i}","123","python3","127.0.0.1","{kernel}(const float *, float *, int)","1","7",'
                         f'"(256, 1, 1)","(2, 1, 1)","0","9.0","Command line profiler metrics","{name}","",'
                         f'"{value:,}"')
    return "\n".join(lines) + "\n"


def counters(sectors_ld, requests_ld, sectors_st, requests_st, conflicts_ld=0, conflicts_st=0, occupancy=50.0):
    return dict(zip(ncu.METRICS, (sectors_ld, requests_ld, sectors_st, requests_st, conflicts_ld, conflicts_st,
                                  occupancy)))


def test_parse_groups_by_launch_in_order_and_reads_thousands():
    text = csv_rows([("copy_strided", counters(8192, 256, 1024, 256)), ("transpose_shared",
                                                                          counters(768, 192, 768, 192, 5952, 0))])
    rows = ncu.parse(text)
    assert [k for k, _ in rows] == ["copy_strided", "transpose_shared"]
    d = ncu.derived(rows[1][1])
    assert d["ld_sectors_per_request"] == 4 and d["bank_conflicts"] == 5952 and d["achieved_occupancy_pct"] == 50


def test_parse_rejects_output_without_csv_or_columns():
    with pytest.raises(ValueError, match="no CSV"):
        ncu.parse("==PROF== No kernels were profiled.\n")
    with pytest.raises(ValueError, match="Metric Name"):
        ncu.parse('"ID","Kernel Name"\n"0","copy_strided"\n')


def test_measure_end_to_end_with_a_fake_ncu(tmp_path, monkeypatch):
    launches = [(k, counters(4 * 32 * (1 + i), 32 * (1 + i), 4 * 16, 16)) for i, (k, _) in enumerate(ncu.LAUNCHES)]
    (tmp_path / "out.csv").write_text(csv_rows(launches))
    fake = tmp_path / "ncu"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *"--clock-control none"*"helpers.kernels.ncu"*) cat {tmp_path / 'out.csv'} ;; *) exit 3 ;; esac
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    result = ncu.measure()
    assert list(result) == [label for _, label in ncu.LAUNCHES]
    assert all(r["ld_sectors_per_request"] == 4 and r["st_sectors_per_request"] == 4 for r in result.values())
    (tmp_path / "out.csv").write_text(csv_rows(launches[::-1]))  # another order: named, not silently mislabelled
    with pytest.raises(RuntimeError, match="expected"):
        ncu.measure()


def test_measure_without_ncu_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nsight-compute"):
        ncu.measure()
