# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Appended by `make docs` to the conf.py that `antsibull-docs sphinx-init` writes.

The build must not need the network (CI and this project's machines reach only package
registries), so no intersphinx inventory is fetched. The few labels of the Ansible docsite
that antsibull-docs' module and role pages refer to are linked to their pages on
docs.ansible.com instead; any other missing reference still fails the build (-W).
"""

intersphinx_mapping = {}

ANSIBLE_DOCSITE = "https://docs.ansible.com/projects/ansible/devel/"
ANSIBLE_LABELS = {
    "common_return_values": "reference_appendices/common_return_values.html",
    "ansible_configuration_settings": "reference_appendices/config.html",
    "action_plugins": "plugins/action.html",
}


def _ansible_docsite_label(app, env, node, contnode):  # pylint: disable=unused-argument
    target = node.get("reftarget")
    if node.get("reftype") != "ref" or target not in ANSIBLE_LABELS:
        return None
    from docutils import nodes  # pylint: disable=import-outside-toplevel
    reference = nodes.reference("", "", internal=False, refuri=ANSIBLE_DOCSITE + ANSIBLE_LABELS[target])
    reference += contnode
    return reference


def setup(app):
    app.connect("missing-reference", _ansible_docsite_label)
