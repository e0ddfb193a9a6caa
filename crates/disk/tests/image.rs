//! A disk image as the imager makes it: Talos's partitions by name, BOOT bootable with slot A
//! and EXTLINUX on it, STATE and EPHEMERAL formatted. Needs root, loop devices, the file
//! system tools and EXTLINUX (scripts/setup installs them).

use std::path::Path;
use std::process::Command;

fn can_run() -> bool {
    let ok = Path::new("/dev/loop-control").exists()
        && Path::new(disk::GPT_MBR).exists()
        && Path::new("/usr/bin/extlinux").exists();
    assert!(
        ok || std::env::var("CI").as_deref() != Ok("true"),
        "needs loop devices, extlinux and syslinux-common"
    );
    ok
}

#[test]
fn an_image_has_talos_partitions_a_boot_loader_and_slot_a() {
    if !can_run() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("disk-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (kernel, initramfs, raw) = (
        dir.join("vmlinuz"),
        dir.join("initramfs.img"),
        dir.join("disk.raw"),
    );
    std::fs::write(&kernel, b"kernel").unwrap();
    std::fs::write(&initramfs, b"initramfs").unwrap();
    let boot = disk::Boot {
        kernel: &kernel,
        initramfs: &initramfs,
        cmdline: "console=ttyS0 talos.platform=metal",
        extensions: None,
    };
    // Too small a disk is refused before anything is written.
    let small = dir.join("small.raw");
    let err = disk::image(&small, 512, &boot).unwrap_err();
    assert!(err.contains("need at least"), "{err}");

    disk::image(&raw, 2048, &boot).unwrap();
    let gpt = gpt::GptConfig::new().writable(false).open(&raw).unwrap();
    let parts: Vec<_> = gpt.partitions().values().collect();
    assert_eq!(
        disk::labels(&raw),
        ["EFI", "BIOS", "BOOT", "META", "STATE", "EPHEMERAL"]
    );
    assert!(disk::labels(&small).is_empty(), "no GPT, no partitions");
    assert_eq!(parts[2].flags, 1 << 2, "BOOT is legacy-BIOS bootable");
    assert_eq!(parts[0].part_type_guid, gpt::partition_types::EFI);
    assert_eq!(parts[1].part_type_guid, gpt::partition_types::BIOS);
    let mib = |p: &gpt::partition::Partition| ((p.last_lba - p.first_lba + 1) * 512) >> 20;
    assert_eq!(
        parts.iter().take(5).map(|p| mib(p)).collect::<Vec<_>>(),
        [100, 1, 1000, 1, 100]
    );
    assert!(mib(parts[5]) > 700, "EPHEMERAL takes the rest");
    let bytes = std::fs::read(&raw).map(|b| b[..440].to_vec()).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(disk::GPT_MBR).unwrap()[..440],
        "the boot code is in the MBR"
    );

    // Each file system carries its partition's name.
    for (i, label) in [(0, "EFI"), (2, "BOOT"), (4, "STATE"), (5, "EPHEMERAL")] {
        let p = parts[i];
        let lo = disk::Loop::attach(
            &raw,
            false,
            p.first_lba * 512,
            (p.last_lba - p.first_lba + 1) * 512,
        )
        .unwrap();
        let out = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "LABEL"])
            .arg(&lo.dev)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), label);
        if label == "BOOT" {
            let mnt = dir.join("boot");
            std::fs::create_dir_all(&mnt).unwrap();
            nix::mount::mount(
                Some(&lo.dev),
                &mnt,
                Some("ext4"),
                nix::mount::MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .unwrap();
            let conf = std::fs::read_to_string(mnt.join("extlinux.conf"));
            let slot = std::fs::read(mnt.join("A/initramfs.img"));
            let loader = mnt.join("ldlinux.sys").exists();
            nix::mount::umount(&mnt).unwrap();
            let conf = conf.unwrap();
            assert!(conf.starts_with("DEFAULT A\n"), "{conf}");
            assert!(
                conf.contains("APPEND console=ttyS0 talos.platform=metal"),
                "{conf}"
            );
            assert_eq!(slot.unwrap(), b"initramfs");
            assert!(loader, "EXTLINUX is installed");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
