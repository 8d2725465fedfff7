"""lab/measure.py without a lab: parsing ping's timestamped output, the outage and
loss computation, the path from an agent's status, the table, argument checks and
the prober's reader (with a fake ping)."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from aronet.core.status import Status
from aronet.errors import AronetError
from lab import measure
from lab.measure import (
    Pinger,
    analyse,
    as_table,
    flowing_since,
    parse_ping_line,
    parse_ping_output,
    ping_argv,
    route_path,
    summarize,
    unwrap_seq,
)
from lab.run import open_lab

T0 = 1_700_000_000.0

PING_OUTPUT = """\
PING 172.20.2.1 (172.20.2.1) from 172.20.1.1 : 56(84) bytes of data.
[1700000000.000000] 64 bytes from 172.20.2.1: icmp_seq=1 ttl=64 time=0.512 ms
[1700000000.010000] 64 bytes from 172.20.2.1: icmp_seq=2 ttl=64 time=0.498 ms
[1700000000.020000] 64 bytes from 172.20.2.1: icmp_seq=3 ttl=64 time=0.501 ms
[1700000000.030500] no answer yet for icmp_seq=4
[1700000000.040500] no answer yet for icmp_seq=5
ping: sendmsg: Network is unreachable
[1700000000.050500] From 172.20.1.1 icmp_seq=6 Destination Host Unreachable
[1700000000.060500] no answer yet for icmp_seq=7
[1700000001.560000] 64 bytes from 172.20.2.1: icmp_seq=8 ttl=63 time=1.20 ms
[1700000001.561000] 64 bytes from 172.20.2.1: icmp_seq=8 ttl=63 time=2.20 ms (DUP!)
[1700000001.570000] 64 bytes from 172.20.2.1: icmp_seq=9 ttl=63 time=1.10 ms

--- 172.20.2.1 ping statistics ---
9 packets transmitted, 6 received, 33% packet loss, time 1570ms
"""


def stream(start: float, first_seq: int, count: int, interval: float = 0.01) -> list[tuple[float, int]]:
    return [(start + i * interval, first_seq + i) for i in range(count)]


# ------------------------------------------------------------------ parsing


def test_reply_and_no_answer_lines_parse_with_timestamp_and_sequence():
    assert parse_ping_line("[1700000000.010000] 64 bytes from 172.20.2.1: icmp_seq=2 ttl=64 "
                           "time=0.498 ms") == ("reply", 1700000000.01, 2)
    assert parse_ping_line("[1700000000.030500] no answer yet for icmp_seq=4\n") == (
        "no-answer", 1700000000.0305, 4)
    assert parse_ping_line("[1700000002.5] 64 bytes from fd12:3456::2: icmp_seq=7 ttl=63 "
                           "time=1.3 ms") == ("reply", 1700000002.5, 7)


@pytest.mark.parametrize("line", [
    "PING 172.20.2.1 (172.20.2.1) from 172.20.1.1 : 56(84) bytes of data.",
    "ping: sendmsg: Network is unreachable",
    "[1700000000.050500] From 172.20.1.1 icmp_seq=6 Destination Host Unreachable",
    "[1700000000.050500] From 10.0.0.1 icmp_seq=6 Time to live exceeded",
    "9 packets transmitted, 6 received, 33% packet loss, time 1570ms",
    "64 bytes from 172.20.2.1: icmp_seq=2 ttl=64 time=0.498 ms",  # without -D: no time
    "",
])
def test_other_lines_are_ignored(line):
    assert parse_ping_line(line) is None


def test_output_gives_replies_without_duplicates_and_the_last_sequence_sent():
    replies, sent = parse_ping_output(PING_OUTPUT)
    assert [seq for _ts, seq in replies] == [1, 2, 3, 8, 9]
    assert replies[3] == (1700000001.56, 8)  # the first copy, not the DUP
    assert sent == 9


def test_sequence_numbers_are_unwrapped_past_16_bits():
    assert unwrap_seq(5, None) == 5
    assert unwrap_seq(0, 65535) == 65536
    assert unwrap_seq(3, 65534) == 65539
    assert unwrap_seq(65534, 65537) == 65534  # a late reply from before the wrap
    assert unwrap_seq(10, 2 * 65536 + 5) == 2 * 65536 + 10
    text = "\n".join(f"[{T0 + i * 0.01:.6f}] 64 bytes from x: icmp_seq={(65534 + i) % 65536} ttl=1"
                     for i in range(4))
    replies, sent = parse_ping_output(text)
    assert [s for _t, s in replies] == [65534, 65535, 65536, 65537]
    assert sent == 65537


def test_argv_binds_to_the_source_address_or_vrf_device():
    assert ping_argv(4, "172.20.1.1", "172.20.2.1") == [
        "ping", "-4", "-n", "-D", "-O", "-i", "0.01", "-I", "172.20.1.1", "172.20.2.1"]
    assert ping_argv(6, "aronet", "fd12::1", interval=0.2)[-5:] == ["-i", "0.2", "-I", "aronet", "fd12::1"]


# ------------------------------------------------------------------ outage and loss


def test_outage_is_the_gap_across_the_fault_and_lost_counts_missing_requests():
    # replies every 10 ms up to seq 100 (t = 0.99), the fault at 1.0, nothing for
    # seqs 101..350, replies again from seq 351 at t = 3.5; heal at 6.0
    replies = stream(T0, 1, 100) + stream(T0 + 3.5, 351, 250)
    r = analyse(replies, T0 + 1.0, T0 + 6.0)
    assert r["outage_ms"] == pytest.approx(2510.0)
    assert r["lost"] == 250
    assert r["sent"] == 500  # seqs 101..600
    assert r["resumed"] is True
    assert r["return_outage_ms"] is None  # no reply after the heal in this data
    assert r["return_lost"] == 0


def test_only_the_fault_phase_counts_for_the_outage_and_the_return_has_its_own():
    before = stream(T0, 1, 100)  # ..0.99
    rerouted = stream(T0 + 2.0, 201, 300)  # 2.0..4.99
    after_heal = stream(T0 + 5.5, 551, 50) + stream(T0 + 6.2, 621, 100)  # a 0.21 s hiccup
    r = analyse(before + rerouted + after_heal, T0 + 1.0, T0 + 5.0)
    assert r["outage_ms"] == pytest.approx(1010.0)
    assert (r["lost"], r["sent"]) == (100, 400)
    # the gap 4.99 -> 5.5 starts before the heal: it belongs to the fault phase (and
    # is shorter than the outage); the return phase's longest gap is 5.99 -> 6.2
    assert r["return_outage_ms"] == pytest.approx(210.0)
    assert r["return_lost"] == 50 + 20  # seqs 501..550 and 601..620


def test_gap_spanning_the_heal_belongs_to_the_fault_when_traffic_never_resumed_before():
    replies = stream(T0, 1, 100) + stream(T0 + 8.0, 801, 100)
    r = analyse(replies, T0 + 1.0, T0 + 7.0)
    assert r["outage_ms"] == pytest.approx(7010.0)
    assert r["resumed"] is False
    assert r["lost"] == 700
    assert r["return_outage_ms"] == pytest.approx(10.0)
    assert r["return_lost"] == 0


def test_a_flap_after_traffic_settled_is_not_the_outage_but_its_losses_count():
    # failover: 0.99 -> 1.5; steady from 1.5, settled at 3.6; a flap 4.0 -> 5.0
    # (before the heal at 5.555); return: 7.0 -> 7.3
    replies = (stream(T0, 1, 100) + stream(T0 + 1.5, 151, 251) + stream(T0 + 5.0, 501, 201)
               + stream(T0 + 7.3, 731, 50))
    r = analyse(replies, T0 + 1.0, T0 + 5.555, settled_at=T0 + 3.6)
    assert r["outage_ms"] == pytest.approx(510.0)
    assert r["resumed"] is True
    assert r["later_gap_ms"] == pytest.approx(1000.0)
    assert (r["lost"], r["sent"]) == (50 + 99, 556 - 100)  # seqs 101..150 and 402..500
    assert r["return_outage_ms"] == pytest.approx(300.0)
    assert r["return_lost"] == 29  # seqs 702..730
    # without knowing when traffic settled, the flap is the longest gap of the fault
    unsettled = analyse(replies, T0 + 1.0, T0 + 5.555)
    assert unsettled["outage_ms"] == pytest.approx(1000.0)
    assert unsettled["later_gap_ms"] is None


def test_a_gap_across_settling_and_heal_is_a_later_gap():
    replies = stream(T0, 1, 100) + stream(T0 + 1.5, 151, 250) + stream(T0 + 6.0, 601, 100)
    r = analyse(replies, T0 + 1.0, T0 + 4.5, settled_at=T0 + 3.6)  # gap 3.99 -> 6.0
    assert r["outage_ms"] == pytest.approx(510.0)
    assert r["later_gap_ms"] == pytest.approx(2010.0)
    assert r["return_outage_ms"] == pytest.approx(10.0)


def test_no_reply_after_the_fault_reports_no_outage_and_the_sent_requests_as_lost():
    r = analyse(stream(T0, 1, 100), T0 + 1.0, T0 + 5.0, last_sent=600)
    assert r == {"outage_ms": None, "lost": 500, "sent": 500, "resumed": False, "later_gap_ms": None,
                 "return_outage_ms": None, "return_lost": None}
    assert analyse(stream(T0, 1, 100), T0 + 1.0)["lost"] is None


def test_a_fault_that_changes_nothing_measures_one_interval():
    r = analyse(stream(T0, 1, 300), T0 + 1.005, T0 + 2.0)
    assert r["outage_ms"] == pytest.approx(10.0)
    assert r["lost"] == 0
    assert r["return_outage_ms"] == pytest.approx(10.0)


def test_late_and_out_of_order_replies_are_ordered_by_time():
    replies = [(T0, 1), (T0 + 0.01, 2), (T0 + 0.5, 4), (T0 + 0.3, 3), (T0 + 0.51, 5)]
    r = analyse(replies, T0 + 0.02, None)
    assert r["outage_ms"] == pytest.approx(290.0)
    assert r["lost"] == 0
    assert r["return_outage_ms"] is None


def test_request_rate_comes_from_the_first_and_last_reply():
    assert measure.request_rate(stream(T0, 1, 101)) == pytest.approx(100.0)
    assert measure.request_rate(stream(T0, 1, 50, 0.02) + stream(T0 + 5, 300, 1)) == pytest.approx(59.8)
    assert measure.request_rate(stream(T0, 1, 1)) is None


def test_analyse_needs_a_reply_before_the_fault():
    with pytest.raises(ValueError, match="before the fault"):
        analyse(stream(T0 + 2, 1, 10), T0 + 1.0)


def test_flowing_needs_recent_unbroken_replies_after_the_given_time():
    replies = stream(T0, 1, 100) + stream(T0 + 3.0, 301, 100)  # 3.0 .. 3.99
    assert flowing_since(replies[:100], T0 + 1.0, T0 + 2.0) is None  # nothing after 1.0 yet
    assert flowing_since(replies[:100], T0 - 1, T0 + 1.0) == T0
    assert flowing_since(replies, T0 - 1, T0 + 4.0) == pytest.approx(T0 + 3.0)
    assert flowing_since(replies, T0 + 1.0, T0 + 4.1) == pytest.approx(T0 + 3.0)
    assert flowing_since(replies, T0 + 1.0, T0 + 4.5) is None  # the last reply is too old
    assert flowing_since([], T0, T0) is None


def test_summary_takes_median_and_maximum_of_the_outages_measured():
    runs = [{"outage_ms": 1200.0}, {"outage_ms": None}, {"outage_ms": 800.5}, {"outage_ms": 3000.0}]
    assert summarize(runs) == {"median_outage_ms": 1200.0, "max_outage_ms": 3000.0}
    assert summarize([{"outage_ms": None}]) == {"median_outage_ms": None, "max_outage_ms": None}


# ------------------------------------------------------------------ path from the status

STATUS = Status.from_json({
    "node": "a",
    "mode": "netns",
    "peers": [
        {"peer": "fo/b",
         "tunnels": [{"name": "ar-0000000b", "family": "ip4", "ike": "ESTABLISHED",
                      "child": "INSTALLED", "interface": "ar-0000000b", "interface_up": True,
                      "babel_neighbor": None, "babel_metric": None}],
         "routes": [{"prefix": "fdaa:1:2::/64", "via": "fe80::c", "interface": "ar-0000000c",
                     "metric": 192}]},
        {"peer": "fo/c",
         "tunnels": [{"name": "ar-0000000c", "family": "ip4", "ike": "ESTABLISHED",
                      "child": "INSTALLED", "interface": "ar-0000000c", "interface_up": True,
                      "babel_neighbor": "fe80::c", "babel_metric": 96}],
         "routes": [{"prefix": "fdaa:1:3::/64", "via": "fe80::c", "interface": "ar-0000000c",
                     "metric": 96}]},
    ],
})


def test_path_names_the_tunnel_and_its_peer():
    assert route_path(STATUS, "fdaa:1:2::/64", "fo/b") == {
        "prefix": "fdaa:1:2::/64", "interface": "ar-0000000c", "via": "fe80::c", "metric": 192,
        "peer": "fo/c", "direct": False}
    direct = route_path(STATUS, "fdaa:1:3::/64", "fo/c")
    assert direct["direct"] is True and direct["peer"] == "fo/c"


def test_no_route_is_no_path():
    assert route_path(STATUS, "fdaa:1:9::/64", "fo/x") is None
    assert route_path(Status.from_json({"node": "a", "peers": []}), "fdaa:1:2::/64", "fo/b") is None
    assert route_path(Status.from_json({"error": "no agent"}), "fdaa:1:2::/64", "fo/b") is None


def test_a_route_on_an_unknown_interface_is_not_direct():
    status = Status.from_json({"peers": [{"peer": "fo/b", "tunnels": [],
                                          "routes": [{"prefix": "fdaa:1:2::/64", "via": None,
                                                      "interface": None, "metric": None}]}]})
    path = route_path(status, "fdaa:1:2::/64", "fo/b")
    assert path["peer"] is None and path["direct"] is False


# ------------------------------------------------------------------ the table


def test_table_shows_every_run_and_the_summary():
    result = {
        "a": "a", "b": "b", "fault": "drop-esp", "family": 4, "source": "172.20.1.1",
        "target": "172.20.2.1", "interval_ms": 10.0,
        "runs": [
            {"outage_ms": 2510.0, "lost": 250, "sent": 500, "rate_pps": 80.5, "resumed": True,
             "return_ms": 1800,
             "return_outage_ms": 20.0, "return_lost": 1,
             "path_after": {"interface": "ar-0000000c", "peer": "fo/c", "node": "c", "direct": False}},
            {"outage_ms": 7010.0, "lost": 700, "resumed": False, "return_ms": None,
             "return_outage_ms": None, "return_lost": None, "path_after": None},
            {"outage_ms": None, "lost": None, "resumed": False, "return_ms": 900,
             "path_after": {"interface": "ar-0000000b", "peer": "fo/b", "node": "b", "direct": True}},
        ],
        "median_outage_ms": 4760.0, "max_outage_ms": 7010.0,
    }
    table = as_table(result)
    lines = table.splitlines()
    assert lines[0] == ("failover a -> b, fault drop-esp, IPv4 172.20.1.1 -> 172.20.2.1, "
                        "ping every 10 ms")
    assert lines[1].split()[:3] == ["run", "outage", "ms"]
    assert "2510.0" in lines[2] and " 250/500 " in lines[2]
    assert "via c (ar-0000000c)" in lines[2] and "1800" in lines[2]
    assert "7010.0 (after heal)" in lines[3] and "no route" in lines[3] and "not back" in lines[3]
    assert "not resumed" in lines[4] and "direct (ar-0000000b)" in lines[4]
    assert lines[-1] == "median outage 4760.0 ms, max 7010.0 ms; ping really sent 80.5 to 80.5 requests/s"


# ------------------------------------------------------------------ argument checks

TRIANGLE = textwrap.dedent("""\
    name: tri
    nodes:
      a: {organization: fo}
      b: {organization: fo}
      c: {organization: fo}
    lans:
      wan: {members: [a, b, c], ipv6: false}
    links:
      - [a, c]
    """)


@pytest.fixture
def tri(tmp_path):
    path = tmp_path / "tri.yaml"
    path.write_text(TRIANGLE)
    return open_lab(str(path), directory=str(tmp_path / "lab"))


@pytest.mark.parametrize(("a", "b", "fault", "runs", "message"), [
    ("a", "b", "explode", 1, "unknown fault 'explode'"),
    ("a", "b", "drop-esp", 0, "runs must be at least 1"),
    ("a", "a", "drop-esp", 1, "the same node"),
    ("a", "x", "drop-esp", 1, "no node 'x' in lab tri"),
    ("a", "b", "link", 1, "no link joins a and b"),
])
def test_bad_requests_are_refused_before_anything_runs(tri, a, b, fault, runs, message):
    with pytest.raises(AronetError, match=message):
        measure.failover(tri, a, b, fault, runs=runs)


def test_fault_actions_exist_for_a_link_and_for_the_lan(tri):
    for fault in measure.FAULTS:
        inject, repair = measure._fault_actions(tri.plan, "a", "c", fault)
        assert callable(inject) and callable(repair)


# ------------------------------------------------------------------ the prober, with a fake ping

FAKE_PING = """
import sys, time
print("PING fake", flush=True)
seq = 0
while True:
    seq += 1
    if 20 <= seq < 40:
        print(f"[{time.time():.6f}] no answer yet for icmp_seq={seq - 1}", flush=True)
    else:
        print(f"[{time.time():.6f}] 64 bytes from x: icmp_seq={seq} ttl=64 time=0.1 ms", flush=True)
    time.sleep(0.01)
"""


def test_pinger_reads_replies_as_they_come_and_stops_its_process():
    with Pinger([sys.executable, "-c", FAKE_PING]) as ping:
        start = time.time()
        assert ping.wait_flowing(start, 0.3, start + 20)
        proc = ping._proc
    assert proc.poll() is not None
    seqs = [s for _t, s in ping.replies]
    assert seqs[:19] == list(range(1, 20))
    assert not set(range(20, 40)) & set(seqs)
    assert ping.last_sent >= max(seqs)
    assert ping.other == ["PING fake"]


def test_pinger_reports_a_ping_that_stopped():
    with (Pinger([sys.executable, "-c", "print('ping: connect: Network is unreachable')"]) as ping,
          pytest.raises(AronetError, match="ping stopped: ping: connect: Network is unreachable")):
        ping.wait_flowing(time.time(), 1.0, time.time() + 20)


def test_pinger_gives_up_at_the_deadline():
    with Pinger([sys.executable, "-c", "import time; time.sleep(30)"]) as ping:
        assert ping.wait_flowing(time.time(), 1.0, time.time() + 0.2) is False
