"""The doctest sandbox scores right, wrong, hanging and harmful code, and pass@k is exact.

All sandbox cases run in one `run_doctests` call (one subprocess each, two at
a time), so the file costs about the one 2-second timeout.
"""

import math

import pytest

from research import execution

GCD = '''def gcd(a, b):
    """Greatest common divisor.

    >>> gcd(12, 18)
    6
    >>> gcd(7, 0)
    7
    """
'''
# A method that passes only if compiled as in its class: a mangled private name, super().
FRACTION_REPR = '''def __repr__(self):
    """repr(self)

    >>> Fraction(1, 2)
    Fraction(1, 2)
    """
    try:
        self.__probe
    except AttributeError as e:
        assert "_Fraction__probe" in str(e), e
    assert super().__repr__().startswith("<fractions.Fraction object")
    return "%s(%s, %s)" % (self.__class__.__name__, self._numerator, self._denominator)'''


def _gcd(body: str) -> dict:
  return {"module": "math", "qualname": "gcd", "code": GCD + body}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  outside = tmp_path_factory.mktemp("outside")
  cases = {
      "correct": _gcd("    while b:\n        a, b = b, a % b\n    return a"),
      "wrong": _gcd("    return a * b"),
      "hangs": _gcd("    while True:\n        pass"),
      # Each would pass without its guard or limit.
      "allocates_10_gb": _gcd("    x = bytearray(10 << 30)\n    del x\n"
                              "    while b:\n        a, b = b, a % b\n    return a"),
      "writes_outside": _gcd(f"    open({str(outside / 'escaped.txt')!r}, 'w').write('x')\n"
                             "    while b:\n        a, b = b, a % b\n    return a"),
      "runs_a_shell": _gcd(f"    import os\n    os.system('touch {outside / 'shell.txt'}')\n"
                           "    while b:\n        a, b = b, a % b\n    return a"),
      "writes_inside": _gcd("    with open('scratch.txt', 'w') as f:\n        f.write(str(a))\n"
                            "    while b:\n        a, b = b, a % b\n    return a"),
      "opens_a_socket": _gcd("    import socket\n    socket.socket().close()\n"
                             "    while b:\n        a, b = b, a % b\n    return a"),
      "exits_early": _gcd("    import os\n    os._exit(0)"),
      "unparsable": _gcd("    return (a,"),
      "no_such_function": {"module": "math", "qualname": "gcd", "code": "def lcm(a, b):\n  pass"},
      "method_in_its_class": {"module": "fractions", "qualname": "Fraction.__repr__",
                              "code": FRACTION_REPR},
  }
  statuses = execution.run_doctests(list(cases.values()), timeout_s=2.0, memory_mb=512)
  return dict(zip(cases, statuses)), outside


@pytest.mark.parametrize("case, expected", [
    ("correct", "passed"), ("wrong", "failed"), ("hangs", "timeout"),
    ("allocates_10_gb", "failed"), ("writes_outside", "failed"), ("runs_a_shell", "failed"),
    ("writes_inside", "passed"), ("opens_a_socket", "failed"), ("exits_early", "crashed"),
    ("unparsable", "unparsable"), ("no_such_function", "failed"),
    ("method_in_its_class", "passed")])
def test_each_job_gets_its_status(outcomes, case, expected):
  statuses, _ = outcomes
  assert statuses[case] == expected


def test_refused_writes_leave_no_file(outcomes):
  _, outside = outcomes
  assert list(outside.iterdir()) == []


@pytest.mark.parametrize("n, c, k, expected", [
    (10, 3, 1, 0.3), (10, 0, 5, 0.0), (10, 8, 5, 1.0), (5, 5, 1, 1.0),
    (10, 3, 2, 1 - math.comb(7, 2) / math.comb(10, 2)),
    (200, 13, 10, 1 - math.comb(187, 10) / math.comb(200, 10))])
def test_pass_at_k_is_the_unbiased_estimate(n, c, k, expected):
  assert execution.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_refuses_impossible_counts():
  with pytest.raises(ValueError):
    execution.pass_at_k(5, 6, 1)
