"""A pytest plugin that tests a scenario's servers at once: with pytest-xdist (`-n 2`,
the verifier options in .config/molecule/config.yml), each test server's tests form one
unit of work, so that one worker runs all of a server's tests, in their order, while
another worker runs the other server's.

Only for scenarios whose tests touch one server at a time: a test that runs a playbook
over the whole inventory (the operations and package scenarios) would meet the other
server's tests half-way, so those scenarios turn the workers off (`n: "0"`).

Much of a test's time is spent waiting for the server (cron's next minute, a restore,
a lock timing out); waiting for two servers at once roughly halves it.

pytest-xdist's own `--dist loadgroup` would do this with marks, but with pytest 9 the
group never reaches the test's id (xdist 3.8 renames `item._nodeid`, which pytest 9 no
longer reads), so every test went to whichever worker was free. The unit is found here
instead, from the id testinfra gives each test: `test_x[ansible://HOST]` or
`test_x[ansible://HOST-more-ids]`, HOST being a host of the scenario's inventory."""

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner
from xdist.scheduler import LoadScopeScheduling

MARK = "[ansible://"


class ServerScheduling(LoadScopeScheduling):
    """LoadScopeScheduling with one scope per test server."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        # Longest first, so that a host whose name starts another's is not taken for it.
        hosts = AnsibleRunner(config.option.ansible_inventory).get_hosts("all")
        self.hosts = sorted(hosts, key=len, reverse=True)

    def _split_scope(self, nodeid):
        start = nodeid.find(MARK)
        if start >= 0:
            rest = nodeid[start + len(MARK) :]
            for host in self.hosts:
                if rest.startswith(host) and rest[len(host) : len(host) + 1] in ("-", "]"):
                    return host
        return nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    return ServerScheduling(config, log)
