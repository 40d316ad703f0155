from sandman.gateway.limits import StartupLimiter


def test_per_address_cap_refuses_with_the_reason_and_counts_nothing() -> None:
    limiter = StartupLimiter(per_address=2, total=10)
    assert limiter.admit("10.0.0.1") is None
    assert limiter.admit("10.0.0.1") is None
    refusal = limiter.admit("10.0.0.1")
    assert refusal is not None
    assert "from 10.0.0.1" in refusal and "at most 2" in refusal
    assert limiter.pending("10.0.0.1") == 2
    assert limiter.admit("10.0.0.2") is None  # another address is not affected
    limiter.release("10.0.0.1")
    assert limiter.admit("10.0.0.1") is None


def test_total_cap_across_addresses() -> None:
    limiter = StartupLimiter(per_address=5, total=3)
    for host in ("a", "b", "c"):
        assert limiter.admit(host) is None
    refusal = limiter.admit("d")
    assert refusal is not None and "at most 3" in refusal
    assert limiter.pending() == 3
    limiter.release("b")
    assert limiter.admit("d") is None


def test_release_forgets_addresses_that_have_gone() -> None:
    limiter = StartupLimiter(per_address=5, total=5)
    limiter.admit("a")
    limiter.release("a")
    assert limiter.pending() == 0
    assert "a" not in limiter._by_address
