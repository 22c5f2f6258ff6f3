import os

from hacluster import membership


def record(**kw):
    machine, boot = membership.machine_identity()
    rec = {'machine_id': machine, 'boot_id': boot, 'pid': os.getpid(),
           'pid_start': membership.pid_start(os.getpid())}
    rec.update(kw)
    return rec


def test_a_live_process_with_our_hostname_elsewhere_is_never_judged_dead():
    # A cloned VM: same hostname, another machine; its pid means nothing
    # here.
    assert not membership._incarnation_dead(
        record(machine_id='another-machine', pid=2 ** 22 - 3))


def test_a_dead_pid_on_this_machine_and_boot_is_a_dead_incarnation():
    assert membership._incarnation_dead(record(pid=2 ** 22 - 3))


def test_after_a_reboot_nothing_is_assumed():
    assert not membership._incarnation_dead(record(boot_id='earlier-boot',
                                                   pid=2 ** 22 - 3))


def test_a_reused_pid_is_recognised_by_its_start_time():
    assert not membership._incarnation_dead(record())
    assert membership._incarnation_dead(
        record(pid_start=membership.pid_start(os.getpid()) + 1))
