//! Files the node writes from its config: `machine_files` (`machine.files`).

pub mod machine_files;
