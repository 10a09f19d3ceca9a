/*
 * Stand-in for lodash 4.17.20 (pkg:npm/lodash@4.17.20, MIT), the browser asset this example agent
 * embeds in the pages it writes. The repository does not carry lodash's code: this file takes its
 * place so the example stays small. The SBOM, the scan, the gate and the VEX statement treat the
 * declared dependency exactly as they would the real file; see examples/scanning/README.md.
 */
#ifndef LODASH_ASSET_H
#define LODASH_ASSET_H

#define LODASH_VERSION "4.17.20"
#define LODASH_ASSET "/* lodash " LODASH_VERSION " (stand-in) */ window._ = window._ || {};"

#endif
