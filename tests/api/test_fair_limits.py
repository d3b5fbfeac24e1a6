"""The API's admission rules of fair share: the key's priority ceiling, the per-key token bucket
(shared through Redis, per process when Redis is down) and the owner's daily quota by plan."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest

from api.keys import create_key
from api.ratelimit import RateLimiter
from tests.api.conftest import ApiEnv, problem_type, scalar


def _count(env: ApiEnv, owner_id: uuid.UUID) -> int:
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        return int(scalar(conn, "SELECT count(*) FROM conversions WHERE user_id = %s OR vendor_id = %s",
                          (owner_id, owner_id)))


def test_a_priority_above_the_keys_ceiling_is_refused_and_creates_nothing(api: ApiEnv) -> None:
    owner = api.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    body = {"user_image_id": person, "cloth_image_id": garment}
    refused = owner.client().post("/v1/conversions", json={**body, "priority": 1000})
    assert refused.status_code == 422 and problem_type(refused) == "priority_not_allowed"
    assert refused.json()["max_priority"] == 10
    assert _count(api, owner.id) == 0
    assert owner.client().post("/v1/conversions", json={**body, "priority": 10}).status_code == 202
    # a key made with a higher ceiling may ask for more
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        _, key = create_key(conn, scope="producer", user_id=owner.id, max_priority=1000)
    trusted = api.anonymous(Authorization=f"Bearer {key}")
    assert trusted.post("/v1/conversions", json={**body, "priority": 1000}).status_code == 202
    assert _count(api, owner.id) == 2


def test_the_token_bucket_answers_429_with_retry_after_and_ratelimit_headers(
        make_api: Callable[..., ApiEnv]) -> None:
    env = make_api(api_rate_per_s=0.2, api_rate_burst=2)
    owner = env.owner()
    person, garment = owner.image("user"), owner.image("cloth")
    body = {"user_image_id": person, "cloth_image_id": garment}
    first = owner.client().post("/v1/conversions", json=body)
    assert first.status_code == 202
    assert first.headers["RateLimit-Policy"] == '"conversions";q=2;w=10'
    assert first.headers["RateLimit"].startswith('"conversions";r=1;')
    assert owner.client().post("/v1/conversions", json=body).status_code == 202
    third = owner.client().post("/v1/conversions", json=body)
    assert third.status_code == 429 and problem_type(third) == "rate_limited"
    assert 1 <= int(third.headers["Retry-After"]) <= 5
    assert third.headers["RateLimit"].startswith('"conversions";r=0;')
    assert _count(env, owner.id) == 2
    # another key has a bucket of its own
    other = env.owner()
    assert other.conversion()["status"] == "pending"


def test_buckets_are_shared_across_processes_through_redis(redis_url: str) -> None:
    key = uuid.uuid4()
    prefix = f"stayler:test:ratelimit:{uuid.uuid4().hex}:"
    a = RateLimiter(redis_url, rate_per_s=0.01, burst=3, prefix=prefix)
    b = RateLimiter(redis_url, rate_per_s=0.01, burst=3, prefix=prefix)
    taken = [a.take(key).allowed, b.take(key).allowed, a.take(key).allowed, b.take(key).allowed]
    assert taken == [True, True, True, False]
    assert not a.degraded and not b.degraded


def test_without_redis_each_process_limits_on_its_own() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", rate_per_s=0.01, burst=2)
    key = uuid.uuid4()
    decisions = [limiter.take(key) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert limiter.degraded
    assert decisions[2].headers()["Retry-After"] == "100"


@pytest.mark.parametrize("kind", ["user", "vendor"])
def test_the_daily_quota_counts_what_the_database_holds(make_api: Callable[..., ApiEnv], kind: str) -> None:
    env = make_api(api_quota_free_per_day=2, api_quota_paid_per_day=3, api_quota_vendor_per_day=2,
                   api_rate_per_s=0)
    owner = env.owner(kind)
    person, garment = owner.image("user"), owner.image("cloth")
    body = {"user_image_id": person, "cloth_image_id": garment}
    for _ in range(2):
        assert owner.client().post("/v1/conversions", json=body).status_code == 202
    refused = owner.client().post("/v1/conversions", json=body)
    assert refused.status_code == 429 and problem_type(refused) == "quota_exceeded"
    assert refused.json()["quota"] == 2 and refused.json()["used"] == 2
    assert 1 <= int(refused.headers["Retry-After"]) <= 86400
    if kind == "user":  # the paid plan has its own count
        assert owner.client().post("/v1/conversions", json={**body, "conversion_type": "paid"}).status_code == 202
    else:  # a vendor's plan is 'vendor' whatever the conversion's type
        paid = owner.client().post("/v1/conversions", json={**body, "conversion_type": "paid"})
        assert paid.status_code == 429
    # yesterday's conversions do not count
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        conn.execute("UPDATE conversions SET created_at = created_at - interval '1 day' "
                     "WHERE user_id = %s OR vendor_id = %s", (owner.id, owner.id))
    assert owner.client().post("/v1/conversions", json=body).status_code == 202
