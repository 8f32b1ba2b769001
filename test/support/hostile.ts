// Strings that would run commands if anything interpolated them into a shell command line.
export function HOSTILE_STRINGS(pwned: string): string[] {
  return [
    `$(touch ${pwned})`,
    `'; touch ${pwned}; rm -rf ~ #`,
    `\`touch ${pwned}\``,
    `acme/web\n; touch ${pwned}\n`,
    `"; touch ${pwned}; echo "`,
    `\\'\\"\\$HOME \${HOME} $HOME %s %n`,
    `-rf --help`,
    `ünïcødé ☃ \t tab $((1+1))`,
  ];
}
