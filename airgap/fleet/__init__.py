"""`airgap fleet`: one bundle onto many isolated servers, through Ansible (ansible-core).

airgap does not open SSH connections itself: it runs `ansible-playbook` (from the python running airgap)
with a playbook shipped in this package (playbook/install.yml, playbook/status.yml), against the user's
inventory in Ansible's own formats. Each host writes one JSON result onto the control node; airgap reads
those into one fleet report (report.py) or one fleet status with drift (status.py).

    playbook.py   find ansible-core, read the inventory, run a playbook, collect the per-host results
    report.py     `fleet install` / `fleet plan`: per host, each layer's status, the doctor's, who differs
    status.py     `fleet status`: each host against the lock, and the signed fleet inventory file
"""
