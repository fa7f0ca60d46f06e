#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: install_files
short_description: Write the files of one folder, given by name and content, in one task
version_added: 0.3.0
description:
  - Writes each file of O(files) into the existing folder O(path) whose content differs (or which is missing),
    each atomically (written aside, fsynced, renamed), then sets mode, owner and group as the file options say.
    Other files of the folder are left alone.
  - The role C(dirstorage.replication.install) installs the engine (the collection's C(plugins/module_utils/))
    with it, in one call per host. The C(ansible.builtin.copy) module in a loop cost three round trips per file.
  - Refuses any name that is not a plain file name (no C(/), no C(..)) before it touches the disk.
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  path:
    description:
      - The folder. It must exist.
    type: path
    required: true
  files:
    description:
      - The files, as a dictionary of file name to content (text, written as UTF-8, byte for byte).
    type: dict
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details: Reports in RV(written) the files it would write; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Install two scripts
  dirstorage.replication.install_files:
    path: /usr/local/lib/site-scripts
    files:
      hello.py: "print('hello')\n"
      bye.py: "{{ lookup('ansible.builtin.file', 'bye.py', rstrip=false) }}"
    owner: root
    group: root
    mode: "0644"
"""

RETURN = r"""
changed:
  description: Whether a file's content, mode, owner or group changed (in check mode, would change).
  returned: always
  type: bool
  sample: true
written:
  description: The names of the files whose content was written (in check mode, would be), sorted.
  returned: success
  type: list
  elements: str
  sample: [cli.py, storage.py]
"""

# Ansible modules keep their imports after the documentation strings.
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import fail_message  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.install import files_to_write, write_files  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True),
                                              files=dict(type="dict", required=True)),
                           add_file_common_args=True, supports_check_mode=True)
    folder = module.params["path"]
    files = {name: str(text).encode("utf-8") for name, text in module.params["files"].items()}
    if not os.path.isdir(folder):
        module.fail_json(msg="%s is not a folder: create it first (ansible.builtin.file, state=directory)" % folder)
    try:
        written = files_to_write(folder, files)
        if not module.check_mode:
            write_files(folder, files, written)
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e))
    changed = bool(written)
    for name in sorted(files):
        if module.check_mode and name in written:
            continue  # not there yet: its attributes would be set with it
        file_args = module.load_file_common_arguments(module.params, path=os.path.join(folder, name))
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, written=written)


if __name__ == "__main__":
    main()
