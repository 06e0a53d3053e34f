package fleetgen

// The catalog of the realistic profile. Strings that go into payloads are
// written here as they appear between the quotes of a JSON string, escapes
// included: agents write backslashes of Windows paths as \\, quotes as \",
// newlines as \n, and non-ASCII text either as raw UTF-8 or as \u escapes
// (Go's encoder also escapes <, > and & as \u003c, \u003e, \u0026).

// probeDef is a probe an agent runs: its name as decoded, the spellings
// agents write it in (escaped JSON string contents; several when
// encoders differ), its framework and controls, and evidence a failing
// control may carry.
type probeDef struct {
	name      string
	spellings []string
	framework string
	controls  []string
	evidence  []string
}

// linuxProbes and windowsProbes are what hosts of each family run. No
// probe lists a control twice: probe_failures keys its rows by event,
// framework and control.
var (
	linuxProbes = []probeDef{
		{name: "ssh-hardening", framework: "cis",
			controls: []string{"CIS-5.2.1", "CIS-5.2.4", "CIS-5.2.7", "CIS-5.2.10"},
			evidence: []string{`PermitRootLogin \"yes\" in /etc/ssh/sshd_config:42`, `MaxAuthTries 10 \u003e 4`, `Ciphers include aes128-cbc\n`}},
		{name: "filesystem", framework: "cis",
			controls: []string{"CIS-1.1.2", "CIS-1.1.3", "CIS-1.1.4", "CIS-1.1.8"},
			evidence: []string{`\/tmp is not a separate partition`, `/dev/shm mounted without noexec\n`}},
		{name: "audit-logging", framework: "nist",
			controls: []string{"AU-2", "AU-3", "AU-8", "AU-12"},
			evidence: []string{`rule \"-w /etc/passwd -p wa -k identity\" missing`, `auditd.conf: max_log_file_action = ROTATE`}},
		{name: "kernel-params", framework: "stig",
			controls: []string{"V-230266", "V-230267", "V-230269"},
			evidence: []string{`kernel.kptr_restrict = 0 (want 1)`, `fs.suid_dumpable = 2`}},
		{name: "durcissement-système", spellings: []string{`durcissement-système`, `durcissement-syst\u00e8me`}, framework: "anssi",
			controls: []string{"R8", "R9", "R11", "R12"},
			evidence: []string{`« vm.mmap_min_addr » vaut 4096, attendu 65536`, `\u00ab kernel.yama.ptrace_scope \u00bb vaut 0`}},
		{name: `osquery:SELECT name FROM users WHERE shell = "/bin/sh"`, spellings: []string{`osquery:SELECT name FROM users WHERE shell = \"/bin/sh\"`}, framework: "internal",
			controls: []string{"SEC-101", "SEC-102", "SEC-103"},
			evidence: []string{`deploy\tuid=1001\tshell=/bin/sh`}},
		tlsProbe,
	}
	windowsProbes = []probeDef{
		{name: `registry:HKLM\SOFTWARE\Policies\Microsoft\Windows Defender`, spellings: []string{`registry:HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender`}, framework: "cis-windows",
			controls: []string{"18.10.43.6.1", "18.10.43.10.1", "18.10.43.13.1"},
			evidence: []string{`DisableAntiSpyware = 1 at HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender`, `C:\\ProgramData\\Microsoft\\Windows Defender\\Scans is excluded`}},
		{name: "auditpol:Logon/Logoff", framework: "cis-windows",
			controls: []string{"17.5.1", "17.5.2", "17.5.4", "17.5.6"},
			evidence: []string{`Logon: \"No Auditing\" (want \"Success and Failure\")`}},
		tlsProbe,
	}
	tlsProbe = probeDef{name: "tls-config", framework: "pci-dss",
		controls: []string{"PCI-2.2.7", "PCI-4.2.1", "PCI-8.3.2"},
		evidence: []string{`TLSv1.0 enabled on :443`, `certificate \"CN=*.example.com\" expires in 9 days`}}
)

// probeErrors are messages of probes that could not run.
var (
	linuxProbeErrors   = []string{`exec: \"auditctl\": executable file not found in $PATH`, `timeout after 30s\nprobe killed`}
	windowsProbeErrors = []string{`open C:\\Windows\\System32\\GroupPolicy\\Machine\\Registry.pol: Access is denied.`, `timeout after 30s\r\nprobe killed`}
)

// Other agent events.
var (
	linuxPackages = []string{
		`{"name":"openssl","from":"3.0.13-0ubuntu3.1","to":"3.0.13-0ubuntu3.4"}`,
		`{"name":"openssh-server","from":"1:9.6p1-3ubuntu13.4","to":"1:9.6p1-3ubuntu13.5"}`,
		`{"name":"libc6","from":"2.39-0ubuntu8.3","to":"2.39-0ubuntu8.4"}`,
	}
	windowsPackages = []string{
		`{"name":"Microsoft Visual C++ 2015-2022 Redistributable (x64)","from":"14.38.33135","to":"14.40.33810"}`,
		`{"name":"7-Zip 23.01 (x64)","from":"23.01","to":"24.08"}`,
	}
	linuxLogSources   = []string{`/var/log/auth.log`, `\/var\/log\/syslog`, `/var/log/audit/audit.log`}
	windowsLogSources = []string{`C:\\ProgramData\\Agent\\logs\\agent.log`, `C:\\Windows\\System32\\winevt\\Logs\\Security.evtx`}
	linuxLogLines     = []string{
		`sshd[2231]: Failed password for invalid user admin from 203.0.113.7 port 52814 ssh2`,
		`kernel: [UFW BLOCK] IN=eth0 OUT= SRC=198.51.100.4 DST=10.0.3.17 PROTO=TCP DPT=23`,
		`sudo: deploy : TTY=pts/0 ; PWD=/home/deploy ; COMMAND=/usr/bin/systemctl restart \"app\"`,
	}
	windowsLogLines = []string{
		`Event 4625: An account failed to log on.\r\nAccount Name: Administrator`,
		`Anmeldung für Benutzer \"Müller\" fehlgeschlagen`,
	}
	services        = []string{"sshd", "auditd", "chronyd", "canonlog-agent"}
	windowsServices = []string{"WinDefend", "EventLog", "W32Time", "CanonlogAgent"}
	restartMessages = []string{
		`restarted after config change`,
		`Red\u00e9marrage apr\u00e8s mise \u00e0 jour de la configuration`,
		`Neustart nach Konfigurationsänderung`,
		`watchdog restart \ud83d\udd04 (unit exited with status 1)`,
	}
)

// Control-plane events.
var (
	configs      = []string{"baseline@v7", "baseline@v8", "hardening@v3", "ntp@v2"}
	linuxFiles   = []string{`/etc/ssh/sshd_config`, `/etc/audit/rules.d/50-identity.rules`, `/etc/sysctl.d/60-hardening.conf`}
	windowsFiles = []string{`C:\\Windows\\System32\\GroupPolicy\\Machine\\Registry.pol`, `C:\\ProgramData\\Agent\\conf.d\\defender.json`}
	applyErrors  = []string{`exit status 1: sshd -t: \"/etc/ssh/sshd_config\" line 12: Bad configuration option`, `rollback: C:\\ProgramData\\Agent\\conf.d\\defender.json is locked`}
	rolloutTypes = []string{"RolloutStarted", "WaveAdvanced", "WaveAdvanced", "RolloutPaused", "RolloutCompleted"}
	operators    = []string{"ops@example.com", "release-bot", "j.müller@example.com"}
)
