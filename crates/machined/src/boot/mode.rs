//! How this node runs, decided once at start and handed down: a plain process (tests, the
//! node benchmark), a container-mode node (PID 1 of its own namespaces, local clusters) or a
//! machine booted from the image (installed on its disk, or running from memory).

/// The run mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// An ordinary process: no namespaces of its own, nothing of the host's is changed.
    Process,
    /// PID 1 of its own mount, PID, UTS and network namespaces.
    Container,
    /// The init of a machine booted from the image; `installed`: its STATE is on its disk.
    Machine { installed: bool },
}

impl RunMode {
    /// The mode of this process: a machine's init and a container-mode node mark themselves
    /// (`boot::container::mark_rooted`, which survives the re-execution of a reboot).
    pub fn detect() -> RunMode {
        if crate::boot::metal::booted() {
            RunMode::Machine {
                installed: crate::boot::metal::installed(),
            }
        } else if crate::boot::container::rooted() {
            RunMode::Container
        } else {
            RunMode::Process
        }
    }

    /// The node owns its namespaces: it may change the kernel's network, sysctls, hostname,
    /// and run etcd and containerd.
    pub fn rooted(self) -> bool {
        self != RunMode::Process
    }

    /// Installed on its disk: STATE and EPHEMERAL are partitions, upgrades are possible.
    pub fn installed(self) -> bool {
        self == RunMode::Machine { installed: true }
    }

    /// Booted from the image (installed or not).
    pub fn machine(self) -> bool {
        matches!(self, RunMode::Machine { .. })
    }
}
