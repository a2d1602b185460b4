"""The routing table (pure) and balancing: paths, params, aliases, models, claims, health."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from app.discovery import Instance
from app.routing import Balancer, RoutingTable, Target, build_routing_table, candidates
from app.upstreams import PROBE_TIMED_OUT, Upstreams, grace_probe
from nexus_kit import CheckResult, MethodNotAllowedError, ModelNotFoundError, NotFoundError
from tests.support import instance, metadata, snapshot

CHAT = ("POST", "/v1/chat/completions")


def table(*instances: Instance) -> RoutingTable:
    return build_routing_table(snapshot(*instances))


def llm(service: str, n: int = 0, models: tuple[str, ...] = (), **fields: Any) -> Instance:
    return instance(service, n, meta=metadata(service, [CHAT], list(models)), **fields)


def services_of(targets: tuple[Target, ...]) -> list[str]:
    return [t.instance.service for t in targets]


# -- resolving --------------------------------------------------------------------------


def test_exact_paths_resolve_and_unknown_ones_are_404() -> None:
    t = table(instance("acme"))
    assert t.resolve("POST", "/v1/echo").operation_id == "acme.0"
    with pytest.raises(NotFoundError) as caught:
        t.resolve("POST", "/v1/nope")
    assert caught.value.code == "unknown_url"


def test_a_known_path_with_another_method_is_405_with_allow() -> None:
    with pytest.raises(MethodNotAllowedError) as caught:
        table(instance("acme")).resolve("GET", "/v1/echo")
    assert caught.value.headers == {"Allow": "POST"}


def test_param_segments_match_exactly_one_segment() -> None:
    meta = metadata("auth", [("GET", "/v1/api-keys/{id}"), ("GET", "/v1/api-keys/me")])
    t = table(instance("auth", meta=meta))
    assert t.resolve("GET", "/v1/api-keys/abc").path == "/v1/api-keys/{id}"
    assert t.resolve("GET", "/v1/api-keys/me").path == "/v1/api-keys/me"  # literal wins
    for path in ("/v1/api-keys/", "/v1/api-keys/a/b", "/v1/api-keys"):
        with pytest.raises(NotFoundError):
            t.resolve("GET", path)


def test_fewer_params_win_over_more() -> None:
    meta = metadata("files", [("GET", "/v1/{a}/{b}"), ("GET", "/v1/files/{id}")])
    t = table(instance("files", meta=meta))
    assert t.resolve("GET", "/v1/files/x").path == "/v1/files/{id}"
    assert t.resolve("GET", "/v1/other/x").path == "/v1/{a}/{b}"


def test_every_service_path_answers_under_its_alias_for_that_service_only() -> None:
    t = table(instance("template"), instance("acme"))
    route = t.resolve("POST", "/services/acme/v1/echo")
    assert services_of(route.targets) == ["acme"]
    assert route.service == "acme"
    assert "/services/acme/v1/echo"[route.strip :] == "/v1/echo"
    param = table(instance("auth", meta=metadata("auth", [("DELETE", "/v1/keys/{id}")])))
    assert param.resolve("DELETE", "/services/auth/v1/keys/k1").service == "auth"


def test_openai_surface_exists_with_nothing_behind_it() -> None:
    t = table()
    for method, path in [CHAT, ("POST", "/v1/embeddings"), ("POST", "/v1/images/generations"),
                         ("POST", "/v1/audio/speech"), ("POST", "/v1/completions")]:  # fmt: skip
        route = t.resolve(method, path)
        assert route.targets == ()
        assert route.slow


def test_instances_without_metadata_have_no_routes() -> None:
    pending = instance("acme")
    from dataclasses import replace

    t = table(replace(pending, metadata=None))
    with pytest.raises(NotFoundError):
        t.resolve("POST", "/v1/echo")


# -- candidates: models, claims, draining -----------------------------------------------


def test_a_model_narrows_to_the_instances_that_advertise_it() -> None:
    route = table(llm("ollama", models=("llama3:latest",)), llm("vllm", models=("qwen",))).resolve(
        *CHAT
    )
    assert services_of(candidates(route, "qwen")) == ["vllm"]
    assert services_of(candidates(route, "llama3:latest")) == ["ollama"]


def test_ollama_models_answer_to_their_short_name_too() -> None:
    route = table(llm("ollama", models=("llama3:latest",), kind="ollama")).resolve(*CHAT)
    assert services_of(candidates(route, "llama3")) == ["ollama"]


def test_an_unknown_model_is_model_not_found() -> None:
    route = table(llm("ollama", models=("llama3",))).resolve(*CHAT)
    with pytest.raises(ModelNotFoundError) as caught:
        candidates(route, "gpt-9")
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (
        404, "model_not_found", "model",
    )  # fmt: skip


def test_instances_advertising_no_models_take_any_model() -> None:
    route = table(llm("ollama", models=("llama3",)), llm("any")).resolve(*CHAT)
    assert services_of(candidates(route, "other")) == ["any"]


def test_without_a_model_a_shared_path_goes_to_the_first_service_by_name() -> None:
    # Deterministic whatever the registration (restart) order: not the oldest etcd key.
    template = instance("template", create_revision=5)
    acme = instance("acme", create_revision=9)
    for pair in ((acme, template), (template, acme)):
        route = table(*pair).resolve("POST", "/v1/echo")
        assert services_of(candidates(route, None)) == ["acme"]
    restarted = instance("acme", create_revision=99)
    route = table(template, restarted).resolve("POST", "/v1/echo")
    assert services_of(candidates(route, None)) == ["acme"]
    static = instance("zeta", source="env", key="env:zeta#0")
    route = table(template, static).resolve("POST", "/v1/echo")
    assert services_of(candidates(route, None)) == ["zeta"]  # static backends come first


def test_draining_instances_are_never_candidates_but_the_route_stays() -> None:
    t = table(instance("acme", 0, draining=True), instance("acme", 1))
    route = t.resolve("POST", "/v1/echo")
    assert [x.instance.instance_id for x in route.targets] == ["acme-1"]
    only = table(instance("acme", 0, draining=True)).resolve("POST", "/v1/echo")
    assert only.targets == ()


def test_public_endpoints_come_from_the_table() -> None:
    endpoints = [("POST", "/v1/auth/login"), ("GET", "/v1/users/{id}"), ("GET", "/v1/files/{id}")]
    meta = metadata("auth", endpoints, public=frozenset({"/v1/auth/login", "/v1/files/{id}"}))
    t = table(instance("auth", meta=meta))
    assert t.is_public("POST", "/v1/auth/login")
    assert t.is_public("GET", "/v1/files/abc")
    assert t.is_public("POST", "/services/auth/v1/auth/login")
    assert not t.is_public("GET", "/v1/users/1")
    assert not t.is_public("GET", "/nowhere")
    assert ("POST", "/v1/auth/login") in t.public_endpoints


def test_a_path_is_public_only_when_every_advertiser_says_so() -> None:
    public = metadata("a", [("POST", "/v1/x")], public=frozenset({"/v1/x"}))
    private = metadata("b", [("POST", "/v1/x")])
    t = table(instance("a", meta=public), instance("b", meta=private))
    assert not t.is_public("POST", "/v1/x")
    assert t.is_public("POST", "/services/a/v1/x")


def test_the_table_is_immutable_and_built_fresh_each_time() -> None:
    snap = snapshot(instance("acme"))
    first, second = build_routing_table(snap), build_routing_table(snap)
    assert first is not second
    assert first.resolve("POST", "/v1/echo") == second.resolve("POST", "/v1/echo")
    with pytest.raises(AttributeError):
        first.snapshot = snap  # type: ignore[misc]


# -- balancing and health ---------------------------------------------------------------


def two_instances() -> tuple[RoutingTable, Upstreams, Balancer]:
    t = table(instance("acme", 0), instance("acme", 1))
    ups = Upstreams(eject_after=3, eject_s=60)
    ups.sync(t.snapshot)
    return t, ups, Balancer(ups)


def test_least_in_flight_wins() -> None:
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    ups.state(targets[0].key).in_flight = 2
    assert {balancer.pick(targets).key for _ in range(4)} == {targets[1].key}  # type: ignore[union-attr]


def test_ties_rotate_across_instances() -> None:
    t, _, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    picked = {balancer.pick(targets).key for _ in range(2)}  # type: ignore[union-attr]
    assert picked == {x.key for x in targets}


def test_failover_excludes_tried_instances() -> None:
    t, _, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    first = balancer.pick(targets)
    assert first is not None
    second = balancer.pick(targets, {first.key})
    assert second is not None
    assert second.key != first.key
    assert balancer.pick(targets, {first.key, second.key}) is None


def test_consecutive_failures_eject_and_a_success_resets() -> None:
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    bad = targets[0].key
    ups.failure(bad, "refused")
    ups.failure(bad, "refused")
    ups.success(bad)
    ups.failure(bad, "refused")
    assert ups.state(bad).available(time.monotonic())
    ups.failure(bad, "refused")
    ups.failure(bad, "refused")
    assert not ups.state(bad).available(time.monotonic())
    assert {balancer.pick(targets).key for _ in range(4)} == {targets[1].key}  # type: ignore[union-attr]
    assert ups.describe(targets[0].instance) == "ejected"


def test_an_ejection_ends_after_its_time() -> None:
    t, ups, _ = two_instances()
    key = t.resolve("POST", "/v1/echo").targets[0].key
    for _ in range(3):
        ups.failure(key, "refused")
    ups.state(key).ejected_until = time.monotonic() - 1  # as if EJECT_S had passed
    assert ups.state(key).available(time.monotonic())


def test_a_passing_probe_brings_an_instance_back_and_a_failing_one_takes_it_out() -> None:
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    key = targets[0].key
    assert ups.probed(key, CheckResult(False, "readyz 503")) is False
    assert ups.describe(targets[0].instance) == "unhealthy"
    assert {balancer.pick(targets).key for _ in range(4)} == {targets[1].key}  # type: ignore[union-attr]
    assert ups.probed(key, CheckResult(True)) is True
    for _ in range(3):
        ups.failure(key, "refused")
    assert ups.probed(key, CheckResult(True)) is True  # out of an ejection too
    assert ups.describe(targets[0].instance) == "ready"


def test_the_last_available_instance_of_a_service_is_never_ejected() -> None:
    """Saturation makes every request time out: ejecting the only instance would turn
    slowness into 503 for everyone. It stays routable; a failing probe still takes it out."""
    t = table(instance("acme", 0))
    ups = Upstreams(eject_after=3, eject_s=60)
    ups.sync(t.snapshot)
    balancer = Balancer(ups)
    targets = t.resolve("POST", "/v1/echo").targets
    key = targets[0].key
    for _ in range(10):
        ups.failure(key, "timed out")
    assert ups.state(key).available(time.monotonic())
    assert ups.describe(targets[0].instance) == "ready"
    assert balancer.pick(targets) == targets[0]
    ups.probed(key, CheckResult(False, "readyz 503"))
    assert balancer.pick(targets) is None


def test_a_probe_timeout_takes_out_a_peer_but_never_the_last_available_instance() -> None:
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    a, b = (x.key for x in targets)
    ups.probed(a, CheckResult(False, PROBE_TIMED_OUT))
    assert ups.describe(targets[0].instance) == "unhealthy"  # b takes the load
    ups.probed(b, CheckResult(False, PROBE_TIMED_OUT))
    assert ups.describe(targets[1].instance) == "ready"  # the last one: slow is not gone
    assert balancer.pick(targets) == targets[1]
    ups.probed(b, CheckResult(False, "readyz 503"))  # an answer saying "not ready" counts
    assert balancer.pick(targets) is None


async def test_a_timed_out_probe_and_an_expired_lease_mean_gone_not_busy() -> None:
    """The lease grace asks no more of an instance whose last probe got no answer."""
    t, ups, _ = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    a, b = (x.instance for x in targets)
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"status": "ready"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        ups.probed(b.key, CheckResult(False, PROBE_TIMED_OUT))  # last one: kept routable
        gone = await grace_probe(ups, http, b)
        assert not gone.ok
        assert asked == []  # decided without asking the unplugged host again
        assert (await grace_probe(ups, http, a)).ok  # its probes pass: asked, and kept
        assert asked == [f"{a.base_url}/readyz"]
        ups.probed(b.key, CheckResult(True, None))
        assert (await grace_probe(ups, http, b)).ok  # answered again: a grace like any other


def test_the_last_one_standing_of_two_is_kept() -> None:
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    a, b = (x.key for x in targets)
    for _ in range(3):
        ups.failure(a, "timed out")
    assert ups.describe(targets[0].instance) == "ejected"  # b is there to take the load
    for _ in range(3):
        ups.failure(b, "timed out")
    assert ups.describe(targets[1].instance) == "ready"  # the last available one stays
    assert {balancer.pick(targets).key for _ in range(4)} == {b}  # type: ignore[union-attr]


def test_a_draining_or_other_service_instance_does_not_count_as_a_peer() -> None:
    t = table(instance("acme", 0), instance("acme", 1, draining=True), instance("other", 0))
    ups = Upstreams(eject_after=1, eject_s=60)
    ups.sync(t.snapshot)
    (target,) = t.resolve("POST", "/services/acme/v1/echo").targets
    ups.failure(target.key, "timed out")
    assert ups.describe(target.instance) == "ready"


def test_a_route_whose_candidates_are_all_ejected_still_picks_one_whose_probe_passes() -> None:
    """Model narrowing can leave only ejected candidates while the service has other
    instances: the balancer falls back to the least loaded of them, never to a failing one."""
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    a, b = (x.key for x in targets)
    ups.state(a).ejected_until = ups.state(b).ejected_until = time.monotonic() + 60
    ups.state(a).in_flight = 5
    assert {balancer.pick(targets).key for _ in range(4)} == {b}  # type: ignore[union-attr]
    ups.probed(b, CheckResult(False, "readyz 503"))
    ups.state(b).ejected_until = time.monotonic() + 60
    assert {balancer.pick(targets).key for _ in range(4)} == {a}  # type: ignore[union-attr]
    assert balancer.pick(targets, {a}) is None


def test_unavailable_everywhere_picks_nothing() -> None:
    t, ups, balancer = two_instances()
    targets = t.resolve("POST", "/v1/echo").targets
    for target in targets:
        ups.probed(target.key, CheckResult(False))
    assert balancer.pick(targets) is None
    assert balancer.pick(()) is None


def test_results_for_an_instance_that_left_are_dropped() -> None:
    t, ups, _ = two_instances()
    key = t.resolve("POST", "/v1/echo").targets[0].key
    ups.sync(snapshot())  # everyone left while requests were in flight
    ups.failure(key, "refused")
    ups.success(key)
    assert ups.states == {}
