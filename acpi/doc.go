// Package acpi is the kernel-facing half of snapsafe's ACPI VMGENID restore
// source: it finds the VM Generation ID device in sysfs and follows the two
// signals through which Linux tells userspace that the VM was restored from a
// snapshot (or cloned).
//
// The hypervisor exposes VMGENID as an ACPI device whose _CID is
// "VM_Gen_Counter" and whose _HID varies: VMGENCTR on Firecracker, QEMUVGID
// on QEMU. When the VM resumes from a snapshot, the hypervisor changes the
// 128-bit generation ID and notifies the device.
//
// What each kernel gives userspace:
//
//   - before 5.18: nothing. The device is visible in sysfs but no mainline
//     driver acts on it.
//   - 5.18 and later: the vmgenid driver feeds the new ID into the kernel RNG
//     and logs "random: crng reseeded due to virtual machine fork" with
//     facility 0 (kern) and level 5 (notice). This is the [SignalKmsg]
//     signal, and only that exact record counts ([ForkRecord]). Writes to
//     /dev/kmsg from userspace are always logged with facility 1 (user) or
//     higher, even root's; and although an unprivileged user can make the
//     kernel log a facility-0 record quoting any text (a tmpfs mount option
//     in a user namespace gives "tmpfs: Unknown parameter '<text>'" at
//     level 3), such a record never is the whole fork text at level 5. From 5.18 to 6.9 vmgenid is an ACPI driver bound to the
//     ACPI device; from 6.10 on it is a platform driver bound to the platform
//     device the ACPI core creates for it (physical_node in sysfs).
//   - 6.8 only: the driver also sent a "change" uevent with NEW_VMGENID=1 on
//     the ACPI device (SUBSYSTEM=acpi). This is the [SignalUevent] signal.
//     It was reverted in 6.9-rc5 and in the 6.8.y stable series (April
//     2024). Vendor kernels may carry it still, on the ACPI device or, with
//     the platform driver, on the platform device; following uevents costs
//     little, so a caller may follow them everywhere.
//
// Since Linux 4.13, root can write "change [UUID [KEY=VALUE ...]]" to the
// device's sysfs uevent file. The kernel then broadcasts a synthetic "change"
// uevent carrying SYNTH_UUID (0 when none was given) and SYNTH_ARG_KEY=VALUE
// for each pair. It proves nothing about a restore; [UeventFollower] counts
// it only when [UeventOptions.AcceptSynthetic] is set, which lets an operator
// or a test drive the real kernel path on purpose.
//
// On a 6.8 kernel one restore arrives through both signals; the caller
// coalesces them.
//
// Uevents are broadcast to netlink sockets in the initial network namespace;
// a follower in another network namespace may receive none. Discovery looks
// only at ACPI: since 6.10 the driver also binds devicetree devices
// (compatible "microsoft,vmgenid"), which Discover does not report, although
// the kernel log signal works for them too.
package acpi
